//! A cluster of real `mnemo` processes on loopback, started and hurt by the harness.
//!
//! Owns the member processes: their flags (etcd's clustering flags, with every peer URL pointing
//! at the member's proxy in [`crate::net::proxy`]), data directories and log files under the run
//! directory, and the process-level faults: `kill -9` and restart, SIGSTOP and SIGCONT, and
//! membership changes (remove a member and wipe it, add it back as a new member). Also leader
//! discovery through Maintenance.Status. The members are `mnemo`, or real etcd
//! ([`Target::Etcd`]): both take the same flags, so the same harness judges both systems.
//!
//! Must not: signal any process it did not start (every signal goes to the PID of a child it
//! holds), bind anything but 127.0.0.1, or judge what members answer (that is the client's and
//! the checker's job). Every wait has a deadline.
//!
//! Dropping a [`Cluster`] resumes and kills every member still running and shuts the proxies
//! down, so a panic or an early return never leaves a process or a cut behind.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tonic::transport::{Channel, Endpoint};

use crate::net::proxy::PeerNetwork;
use crate::pb::etcdserverpb::cluster_client::ClusterClient;
use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::pb::etcdserverpb::{
    CompactionRequest, DefragmentRequest, HashKvRequest, MemberAddRequest, MemberRemoveRequest,
    StatusRequest,
};

/// Deadline of one Maintenance.Status call: short, so a paused member does not hold up a poll.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Deadline of a gRPC connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a member may take to serve after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fresh cluster may take to agree on a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Spawns of one member at first start, when another process took one of its ports.
const START_ATTEMPTS_MAX: usize = 3;
/// Log lines of each member shown when the cluster fails to start.
const LOG_TAIL_LINES: usize = 20;
/// Deadline of a membership change, a compaction or a defragment.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of a membership change: a member refuses one while the previous change is still
/// being applied, or while it has no leader.
const MEMBER_CHANGE_ATTEMPTS: usize = 10;
/// Pause between two attempts of a membership change.
const MEMBER_CHANGE_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Where Debian's etcd-server package installs etcd.
pub const ETCD_BINARY_DEFAULT: &str = "/usr/bin/etcd";

/// Which store the members run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `mnemo`.
    Mnemo,
    /// etcd (3.4 from Debian's etcd-server), to judge it with the same harness.
    Etcd,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "mnemo" => Ok(Target::Mnemo),
            "etcd" => Ok(Target::Etcd),
            other => Err(format!("unknown target {other:?} (expected mnemo or etcd)")),
        }
    }
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of members.
    pub nodes: usize,
    /// The member binary (`mnemo`, or etcd).
    pub binary: PathBuf,
    /// Where data directories and logs go.
    pub run_dir: PathBuf,
    /// `--heartbeat-interval`, ms.
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout`, ms.
    pub election_timeout_ms: u64,
    /// `--snapshot-count`.
    pub snapshot_count: u64,
    /// Lease checkpointing at this interval (`--experimental-enable-lease-checkpoint` and
    /// mnemo's `--experimental-lease-checkpoint-interval`); `None`: off.
    pub lease_checkpoint_interval: Option<Duration>,
    /// Extra environment of every member (`MNEMO_BUG` for an injected bug).
    pub env: Vec<(String, String)>,
}

/// A member's process, if it runs.
struct Process {
    child: Option<Child>,
    /// Whether the process is stopped by SIGSTOP.
    paused: bool,
}

/// One member.
struct Member {
    name: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Client and peer ports; they change only before the member first served.
    ports: Mutex<(u16, u16)>,
    /// Its member id, learned from Status once it served.
    id: Mutex<Option<u64>>,
    process: Mutex<Process>,
    /// Its place in the membership.
    membership: Mutex<Membership>,
}

/// Where a member stands in the cluster's membership.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Membership {
    /// A founding member.
    Founder,
    /// Removed, its process killed and its data wiped.
    Removed,
    /// Added back: it starts with `--initial-cluster-state existing` and this initial cluster.
    Joined(String),
}

/// A running cluster; members are addressed by index, named `n1`, `n2`, ...
pub struct Cluster {
    options: ClusterOptions,
    token: String,
    network: PeerNetwork,
    members: Vec<Member>,
}

impl Cluster {
    /// Starts every member and waits until they agree on a leader.
    ///
    /// # Errors
    /// When the binary is missing, a member does not start or serve, or no leader emerges; the
    /// members' log tails are in the message.
    pub async fn start(options: ClusterOptions) -> anyhow::Result<Cluster> {
        if !options.binary.is_file() {
            bail!(
                "no member binary at {}; build mnemo with `cargo build --bin mnemo`, or install \
                 etcd (`apt-get install etcd-server`) for --target etcd",
                options.binary.display()
            );
        }
        std::fs::create_dir_all(&options.run_dir)
            .with_context(|| format!("create {}", options.run_dir.display()))?;
        let network = PeerNetwork::start(options.nodes).context("start the peer proxies")?;
        let members = (0..options.nodes)
            .map(|index| {
                let name = node_name(index);
                Ok(Member {
                    data_dir: options.run_dir.join(format!("{name}.data")),
                    log_path: options.run_dir.join(format!("{name}.log")),
                    ports: Mutex::new(free_port_pair()?),
                    id: Mutex::new(None),
                    process: Mutex::new(Process {
                        child: None,
                        paused: false,
                    }),
                    membership: Mutex::new(Membership::Founder),
                    name,
                })
            })
            .collect::<anyhow::Result<Vec<Member>>>()?;
        let token = format!("mnemo-jepsen-{}", std::process::id());
        let cluster = Cluster {
            options,
            token,
            network,
            members,
        };
        // Founding members wait for each other, so all are spawned before any is awaited.
        for index in 0..cluster.members.len() {
            cluster.spawn(index)?;
        }
        for index in 0..cluster.members.len() {
            cluster.wait_first_start(index).await?;
        }
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            if cluster.agreed_leader().await.is_some() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "no leader after {LEADER_TIMEOUT:?}\n{}",
                    cluster.log_tails()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Ok(cluster)
    }

    /// Number of members.
    #[must_use]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no member (never true for a started one).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// `n1`, `n2`, ... for member 0, 1, ...
    #[must_use]
    pub fn name(&self, index: usize) -> &str {
        &self.members[index].name
    }

    /// The member's client URL.
    #[must_use]
    pub fn endpoint(&self, index: usize) -> String {
        let (client, _) = *self.members[index]
            .ports
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        format!("http://127.0.0.1:{client}")
    }

    /// The peer network, to cut and heal links.
    #[must_use]
    pub fn network(&self) -> &PeerNetwork {
        &self.network
    }

    fn flags(&self, index: usize) -> Vec<String> {
        let member = &self.members[index];
        let (client, peer) = *member.ports.lock().unwrap_or_else(PoisonError::into_inner);
        let initial_cluster = (0..self.members.len())
            .map(|other| format!("{}={}", node_name(other), self.network.url(other)))
            .collect::<Vec<_>>()
            .join(",");
        let client_url = format!("http://127.0.0.1:{client}");
        let (state, initial_cluster) = match &*lock(&member.membership) {
            Membership::Joined(initial_cluster) => ("existing", initial_cluster.clone()),
            Membership::Founder | Membership::Removed => ("new", initial_cluster),
        };
        [
            ("--name", member.name.clone()),
            ("--data-dir", member.data_dir.display().to_string()),
            ("--listen-client-urls", client_url.clone()),
            ("--advertise-client-urls", client_url),
            ("--listen-peer-urls", format!("http://127.0.0.1:{peer}")),
            ("--initial-advertise-peer-urls", self.network.url(index)),
            ("--initial-cluster", initial_cluster),
            ("--initial-cluster-state", state.to_owned()),
            ("--initial-cluster-token", self.token.clone()),
            (
                "--heartbeat-interval",
                self.options.heartbeat_interval_ms.to_string(),
            ),
            (
                "--election-timeout",
                self.options.election_timeout_ms.to_string(),
            ),
            ("--snapshot-count", self.options.snapshot_count.to_string()),
        ]
        .into_iter()
        .chain(self.options.lease_checkpoint_interval.map(|interval| {
            (
                "--experimental-lease-checkpoint-interval",
                format!("{}ms", interval.as_millis()),
            )
        }))
        .chain(
            self.options
                .lease_checkpoint_interval
                .map(|_| ("--experimental-enable-lease-checkpoint", "true".to_owned())),
        )
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect()
    }

    /// Spawns the member's process on its data directory, logging to its log file.
    fn spawn(&self, index: usize) -> anyhow::Result<()> {
        let member = &self.members[index];
        let mut process = member
            .process
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if process.child.is_some() {
            bail!("{} is already running", member.name);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .with_context(|| format!("open {}", member.log_path.display()))?;
        let log_err = log.try_clone()?;
        let (_, peer) = *member.ports.lock().unwrap_or_else(PoisonError::into_inner);
        self.network.set_target(index, peer);
        let child = Command::new(&self.options.binary)
            .args(self.flags(index))
            .envs(self.options.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("spawn {}", self.options.binary.display()))?;
        self.network.set_pid(index, Some(child.id()));
        process.child = Some(child);
        process.paused = false;
        Ok(())
    }

    /// Waits until a founding member serves. One that lost a port to another process before it
    /// could bind gets fresh ports and a fresh data directory: only its proxy's port is known to
    /// the others, so its own ports may still change.
    async fn wait_first_start(&self, index: usize) -> anyhow::Result<()> {
        for attempt in 1..=START_ATTEMPTS_MAX {
            match self.wait_serving(index, READY_TIMEOUT).await {
                Ok(()) => return Ok(()),
                Err(why) if attempt < START_ATTEMPTS_MAX && self.lost_port_race(index) => {
                    eprintln!("{}: port taken ({why}); retrying", self.name(index));
                    let member = &self.members[index];
                    let _ = std::fs::remove_dir_all(&member.data_dir);
                    *member.ports.lock().unwrap_or_else(PoisonError::into_inner) =
                        free_port_pair()?;
                    self.spawn(index)?;
                }
                Err(why) => bail!(
                    "{} did not start: {why:#}\n{}",
                    self.name(index),
                    self.log_tails()
                ),
            }
        }
        unreachable!("the last attempt returns")
    }

    fn lost_port_race(&self, index: usize) -> bool {
        std::fs::read_to_string(&self.members[index].log_path)
            .is_ok_and(|log| log.contains("in use"))
    }

    /// Waits until the member answers Status, and records its member id; fails at once if its
    /// process exits.
    async fn wait_serving(&self, index: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        // Bounded by the deadline.
        loop {
            {
                let mut process = self.members[index]
                    .process
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let Some(child) = process.child.as_mut() else {
                    bail!("not running");
                };
                if let Some(status) = child.try_wait()? {
                    process.child = None;
                    self.network.set_pid(index, None);
                    bail!("exited with {status} before serving");
                }
            }
            let why = match self.status(index).await {
                Ok((member_id, _)) => {
                    *self.members[index]
                        .id
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(member_id);
                    return Ok(());
                }
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                bail!("not serving after {timeout:?}: {why:#}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// A Maintenance client for the member, for Status; it connects on first use.
    fn maintenance(&self, index: usize) -> anyhow::Result<MaintenanceClient<Channel>> {
        Ok(MaintenanceClient::new(self.channel(index, STATUS_TIMEOUT)?))
    }

    /// A channel to the member's client port whose requests fail after `timeout`.
    fn channel(&self, index: usize, timeout: Duration) -> anyhow::Result<Channel> {
        Ok(Endpoint::from_shared(self.endpoint(index))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            .connect_lazy())
    }

    /// The member's (own id, leader id) from Maintenance.Status.
    async fn status(&self, index: usize) -> anyhow::Result<(u64, u64)> {
        let mut client = self.maintenance(index)?;
        let response = tokio::time::timeout(STATUS_TIMEOUT, client.status(StatusRequest {}))
            .await
            .context("status timed out")??
            .into_inner();
        let member_id = response.header.map_or(0, |header| header.member_id);
        Ok((member_id, response.leader))
    }

    /// The leader, when every member that answers Status within a second names the same one
    /// and a majority answers.
    pub async fn agreed_leader(&self) -> Option<usize> {
        let mut views: BTreeMap<u64, usize> = BTreeMap::new();
        let mut answered = 0;
        for index in 0..self.members.len() {
            if let Ok((_, leader)) = self.status(index).await {
                answered += 1;
                *views.entry(leader).or_default() += 1;
            }
        }
        if answered <= self.members.len() / 2 || views.len() != 1 {
            return None;
        }
        let leader = *views.keys().next()?;
        self.index_of(leader)
    }

    /// The leader according to a majority of the members that answer Status; `None` when there
    /// is none or the members are split.
    pub async fn leader(&self) -> Option<usize> {
        let mut views: BTreeMap<u64, usize> = BTreeMap::new();
        for index in 0..self.members.len() {
            if let Ok((_, leader)) = self.status(index).await {
                *views.entry(leader).or_default() += 1;
            }
        }
        let (&leader, &votes) = views.iter().max_by_key(|&(_, votes)| *votes)?;
        (leader != 0 && votes > self.members.len() / 2)
            .then(|| self.index_of(leader))
            .flatten()
    }

    fn index_of(&self, member_id: u64) -> Option<usize> {
        self.members.iter().position(|member| {
            *member.id.lock().unwrap_or_else(PoisonError::into_inner) == Some(member_id)
        })
    }

    /// Whether the member's process runs (paused or not).
    #[must_use]
    pub fn is_running(&self, index: usize) -> bool {
        self.members[index]
            .process
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .child
            .is_some()
    }

    /// `kill -9` of the member's process, and reaps it.
    ///
    /// # Errors
    /// When it does not run, or the signal fails.
    pub fn kill9(&self, index: usize) -> anyhow::Result<()> {
        let mut process = self.members[index]
            .process
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(mut child) = process.child.take() else {
            bail!("{} is not running", self.name(index));
        };
        self.network.set_pid(index, None);
        process.paused = false;
        child.kill().context("send SIGKILL")?;
        child.wait().context("reap the killed member")?;
        Ok(())
    }

    /// Starts a killed member again on its data directory and waits until it serves.
    ///
    /// # Errors
    /// When it cannot be spawned or does not serve in time.
    pub async fn restart(&self, index: usize) -> anyhow::Result<()> {
        self.spawn(index)?;
        self.wait_serving(index, READY_TIMEOUT).await
    }

    /// SIGSTOP to the member's process.
    ///
    /// # Errors
    /// When it does not run or the signal fails.
    pub fn pause(&self, index: usize) -> anyhow::Result<()> {
        self.signal(index, "STOP", true)
    }

    /// SIGCONT to the member's process.
    ///
    /// # Errors
    /// When it does not run or the signal fails.
    pub fn resume(&self, index: usize) -> anyhow::Result<()> {
        self.signal(index, "CONT", false)
    }

    fn signal(&self, index: usize, signal: &str, paused: bool) -> anyhow::Result<()> {
        let mut process = self.members[index]
            .process
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(child) = process.child.as_ref() else {
            bail!("{} is not running", self.name(index));
        };
        send_signal(child.id(), signal)?;
        process.paused = paused;
        Ok(())
    }

    /// Undoes every fault: resumes paused members, restarts killed ones, heals the network.
    /// Tries every member even when one fails; returns the failures.
    pub async fn heal_all(&self) -> Vec<String> {
        let mut failures = Vec::new();
        self.network.heal();
        for index in 0..self.members.len() {
            let (running, paused) = {
                let process = self.members[index]
                    .process
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                (process.child.is_some(), process.paused)
            };
            if paused && let Err(why) = self.resume(index) {
                failures.push(format!("resume {}: {why:#}", self.name(index)));
            }
            let removed = *lock(&self.members[index].membership) == Membership::Removed;
            if removed {
                if let Err(why) = self.add_back(index).await {
                    failures.push(format!("add back {}: {why:#}", self.name(index)));
                }
            } else if !running && let Err(why) = self.restart(index).await {
                failures.push(format!("restart {}: {why:#}", self.name(index)));
            }
        }
        failures
    }

    /// Whether the member is removed from the membership now.
    #[must_use]
    pub fn is_removed(&self, index: usize) -> bool {
        *lock(&self.members[index].membership) == Membership::Removed
    }

    /// Removes the member from the membership (`MemberRemove` through another member), then
    /// kills it and wipes its data directory, as an operator replacing a machine would.
    ///
    /// # Errors
    /// When its id is unknown, no other member accepts the removal, or the kill fails.
    pub async fn remove(&self, index: usize) -> anyhow::Result<()> {
        let id = (*lock(&self.members[index].id))
            .with_context(|| format!("{} has no known member id", self.name(index)))?;
        self.member_change(index, |mut client| async move {
            client
                .member_remove(MemberRemoveRequest { id })
                .await
                .map(|_| ())
        })
        .await?;
        *lock(&self.members[index].membership) = Membership::Removed;
        if self.is_running(index) {
            self.kill9(index)?;
        }
        let data_dir = &self.members[index].data_dir;
        std::fs::remove_dir_all(data_dir)
            .or_else(|error| {
                if error.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(error)
                }
            })
            .with_context(|| format!("wipe {}", data_dir.display()))?;
        Ok(())
    }

    /// Adds a removed member back (`MemberAdd` with its old peer URL, through another member) and
    /// starts it on an empty data directory with `--initial-cluster-state existing`; waits until
    /// it serves. It gets a new member id, as in etcd.
    ///
    /// # Errors
    /// When no member accepts the addition, or the new member does not serve in time.
    pub async fn add_back(&self, index: usize) -> anyhow::Result<()> {
        let peer_url = self.network.url(index);
        let name = self.name(index).to_owned();
        let members = self
            .member_change(index, |mut client| {
                let peer_url = peer_url.clone();
                async move {
                    client
                        .member_add(MemberAddRequest {
                            peer_ur_ls: vec![peer_url],
                            is_learner: false,
                        })
                        .await
                        .map(|response| response.into_inner().members)
                }
            })
            .await?;
        // The new member has no name yet in the list; every other one has its own.
        let initial_cluster = members
            .iter()
            .filter_map(|member| {
                let url = member.peer_ur_ls.first()?;
                let member_name = if *url == peer_url {
                    name.clone()
                } else {
                    member.name.clone()
                };
                Some(format!("{member_name}={url}"))
            })
            .collect::<Vec<_>>()
            .join(",");
        *lock(&self.members[index].membership) = Membership::Joined(initial_cluster);
        self.spawn(index)?;
        self.wait_serving(index, READY_TIMEOUT).await
    }

    /// Runs a membership change through the first member other than `index` that accepts it,
    /// retrying while members refuse (a change in progress, no leader).
    async fn member_change<T, F, Fut>(&self, index: usize, change: F) -> anyhow::Result<T>
    where
        F: Fn(ClusterClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut last_error = String::from("no other member");
        for attempt in 0..MEMBER_CHANGE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(MEMBER_CHANGE_RETRY_PAUSE).await;
            }
            for other in (0..self.members.len()).filter(|&other| other != index) {
                if !self.is_running(other) || self.is_removed(other) {
                    continue;
                }
                let client = ClusterClient::new(self.channel(other, ADMIN_TIMEOUT)?);
                match tokio::time::timeout(ADMIN_TIMEOUT, change(client)).await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(status)) => {
                        last_error = format!("{}: {}", self.name(other), status.message());
                    }
                    Err(_) => last_error = format!("{}: timed out", self.name(other)),
                }
            }
        }
        bail!("membership change refused: {last_error}")
    }

    /// Compacts the key-value history at `revision` (physically when asked) through member
    /// `index`.
    ///
    /// # Errors
    /// When the member refuses (already compacted, future revision, unavailable).
    pub async fn compact(&self, index: usize, revision: i64, physical: bool) -> anyhow::Result<()> {
        let mut client =
            crate::pb::etcdserverpb::kv_client::KvClient::new(self.channel(index, ADMIN_TIMEOUT)?);
        client
            .compact(CompactionRequest { revision, physical })
            .await
            .with_context(|| format!("compact at {revision} through {}", self.name(index)))?;
        Ok(())
    }

    /// Defragments member `index`.
    ///
    /// # Errors
    /// When the member refuses or does not answer in time.
    pub async fn defragment(&self, index: usize) -> anyhow::Result<()> {
        let mut client = MaintenanceClient::new(self.channel(index, ADMIN_TIMEOUT)?);
        client
            .defragment(DefragmentRequest {})
            .await
            .with_context(|| format!("defragment {}", self.name(index)))?;
        Ok(())
    }

    /// The member's `HashKV` at `revision`: (hash, compact revision).
    ///
    /// # Errors
    /// When it refuses (a future or compacted revision) or does not answer.
    pub async fn hash_kv(&self, index: usize, revision: i64) -> anyhow::Result<(u32, i64)> {
        let mut client = MaintenanceClient::new(self.channel(index, ADMIN_TIMEOUT)?);
        let response = client
            .hash_kv(HashKvRequest { revision })
            .await
            .with_context(|| format!("HashKV at {revision} of {}", self.name(index)))?
            .into_inner();
        Ok((response.hash, response.compact_revision))
    }

    /// The member's current revision, from Status.
    ///
    /// # Errors
    /// When it does not answer.
    pub async fn revision(&self, index: usize) -> anyhow::Result<i64> {
        let mut client = self.maintenance(index)?;
        let response = tokio::time::timeout(STATUS_TIMEOUT, client.status(StatusRequest {}))
            .await
            .context("status timed out")??
            .into_inner();
        Ok(response.header.map_or(0, |header| header.revision))
    }

    /// The last lines of every member's log.
    #[must_use]
    pub fn log_tails(&self) -> String {
        let mut text = String::new();
        for member in &self.members {
            let log = std::fs::read_to_string(&member.log_path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            let _ = writeln!(
                text,
                "--- last lines of {} ({}) ---\n{}",
                member.name,
                member.log_path.display(),
                lines[start..].join("\n")
            );
        }
        text
    }

    /// Log lines of every member that report a panic, with the member's name.
    #[must_use]
    pub fn panics_in_logs(&self) -> Vec<String> {
        let mut found = Vec::new();
        for member in &self.members {
            let log = std::fs::read_to_string(&member.log_path).unwrap_or_default();
            // Rust panics print "panicked at"; Go panics (etcd) start a line with "panic: ".
            found.extend(
                log.lines()
                    .filter(|line| line.contains("panicked at") || line.starts_with("panic: "))
                    .map(|line| format!("{}: {line}", member.name)),
            );
        }
        found
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.network.heal();
        for member in &self.members {
            // A poisoned lock still holds the child; kill it all the same.
            let mut process = member
                .process
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(mut child) = process.child.take() {
                if process.paused {
                    let _ = send_signal(child.id(), "CONT");
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Locks `mutex`, poisoned or not: a member's state stays consistent across a panic.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `n1`, `n2`, ... for member 0, 1, ...
#[must_use]
pub fn node_name(index: usize) -> String {
    format!("n{}", index + 1)
}

/// Sends `signal` (`STOP`, `CONT`) to `pid` with kill(1): the crate forbids `unsafe`, so no
/// libc call. Only PIDs of children the cluster holds are passed here.
fn send_signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()
        .context("run kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed: {status}");
    }
    Ok(())
}

/// Two distinct free loopback ports (client, peer). They are free when picked; another process
/// may take one before the member binds it, which [`Cluster::start`] handles.
fn free_port_pair() -> anyhow::Result<(u16, u16)> {
    let first = std::net::TcpListener::bind("127.0.0.1:0")?;
    let second = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok((first.local_addr()?.port(), second.local_addr()?.port()))
}

/// The `mnemo` binary to use when none is given: `$CARGO_TARGET_DIR/debug/mnemo` when that
/// variable is set, else the `debug/mnemo` of the target directory this program was built in,
/// else `target/debug/mnemo`.
#[must_use]
pub fn default_binary() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Path::new(&dir).join("debug").join("mnemo");
    }
    if let Some(target) = own_target_dir() {
        let candidate = target.join("debug").join("mnemo");
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from("target/debug/mnemo")
}

/// The target directory of the running executable (`<target>/<profile>/mnemo-jepsen`, or
/// `<target>/<profile>/deps/<test>` for a test), when it looks like one.
#[must_use]
pub fn own_target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?;
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir = dir.parent()?;
    }
    dir.parent().map(Path::to_path_buf)
}

/// File name of the `mnemo` binary built with `--features bug-injection`, copied beside the
/// plain one by `scripts/test`.
pub const BUG_BINARY_NAME: &str = "mnemo-bug-injection";
