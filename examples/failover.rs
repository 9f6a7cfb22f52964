//! Failover timing: how long writes stop when the leader of a 3-member cluster dies.
//!
//! Starts a 3-member cluster of `--binary` (mnemo, or anything taking etcd's flags such as
//! etcd itself) on free loopback ports in a temporary directory, runs a steady write load
//! through all three members, and then, `--kills` times: finds the leader, kills it with
//! SIGKILL, measures the time from the kill to the acknowledgement of the first put *sent*
//! after it (a put sent earlier may have been committed by the dead leader already), restarts
//! the killed member and waits until all three agree on a leader and the restarted one has
//! caught up. Prints every measurement, then the median and the worst.
//!
//! `cargo run --example failover -- --binary /usr/bin/etcd --kills 5`
//!
//! Everything stays on 127.0.0.1; the load is bounded in count and time; only the processes
//! started here are signalled, through their `Child` handles, and they are killed on exit.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mnemo::pb::etcdserverpb::kv_client::KvClient;
use mnemo::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use mnemo::pb::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use tonic::transport::{Channel, Endpoint};

/// Members of the cluster.
const MEMBERS: usize = 3;
/// Time between two puts: a steady 200 a second, far from saturating the cluster.
const SEND_INTERVAL: Duration = Duration::from_millis(5);
/// Puts in flight beyond those one put deadline can hold (the deadline divided by
/// [`SEND_INTERVAL`]); with that bound, puts stuck on a dead leader never hold back new ones.
const IN_FLIGHT_SLACK: usize = 64;
/// Bytes of each value.
const VALUE_BYTES: usize = 64;
/// Upper bound of puts per kill (the whole load is bounded by this times `--kills`).
const PUTS_PER_KILL_MAX: u64 = 20_000;
/// Upper bound of time per kill (the whole run is bounded by this times `--kills`).
const TIME_PER_KILL_MAX: Duration = Duration::from_secs(120);
/// Puts acknowledged since the cluster (re)formed before the next kill, so every kill hits a
/// steady load.
const ACKS_BEFORE_KILL: u64 = 100;
/// How long a member may take to serve after a start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long writes may stay unavailable after a kill before the run is declared failed.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a restarted member may take to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of one Status call or one read while polling.
const POLL_CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between two checks of a polled condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Log lines of each member printed when the run fails.
const LOG_TAIL_LINES: usize = 20;

struct Options {
    binary: PathBuf,
    kills: usize,
    election_timeout: Duration,
    heartbeat_interval: Duration,
}

fn parse() -> Result<Options, String> {
    let mut binary = None;
    let mut options = Options {
        binary: PathBuf::new(),
        kills: 20,
        election_timeout: Duration::from_millis(500),
        heartbeat_interval: Duration::from_millis(50),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|err| format!("{flag}: {err}"));
        match flag.as_str() {
            "--binary" => binary = Some(PathBuf::from(&value)),
            "--kills" => {
                options.kills = usize::try_from(number()?).map_err(|err| err.to_string())?;
            }
            "--election-timeout" => options.election_timeout = Duration::from_millis(number()?),
            "--heartbeat-interval" => {
                options.heartbeat_interval = Duration::from_millis(number()?);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    options.binary = binary.ok_or("--binary PATH is required (mnemo or etcd)")?;
    if options.kills == 0 {
        return Err("--kills must be at least 1".into());
    }
    Ok(options)
}

/// One member process and where it lives.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn spawn(&mut self, options: &Options, initial_cluster: &str) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|err| format!("open {}: {err}", self.log_path.display()))?;
        let log_err = log.try_clone().map_err(|err| err.to_string())?;
        let child = Command::new(&options.binary)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(self.endpoint())
            .arg("--advertise-client-urls")
            .arg(self.endpoint())
            .arg("--listen-peer-urls")
            .arg(self.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(self.peer_url())
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg("failover")
            .arg("--heartbeat-interval")
            .arg(options.heartbeat_interval.as_millis().to_string())
            .arg("--election-timeout")
            .arg(options.election_timeout.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|err| format!("spawn {}: {err}", options.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill9(&mut self) -> Result<(), String> {
        let mut child = self
            .child
            .take()
            .ok_or("kill of a member that is not running")?;
        child
            .kill()
            .map_err(|err| format!("SIGKILL {}: {err}", self.name))?;
        child.wait().map_err(|err| err.to_string())?;
        Ok(())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        format!("--- {} ---\n{}", self.name, lines[start..].join("\n"))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|err| err.to_string())?;
    Ok(listener.local_addr().map_err(|err| err.to_string())?.port())
}

/// Polls `condition` until it yields a value or `timeout` passes (a bounded number of tries).
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut condition: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let attempts_max = timeout.as_millis() / POLL_INTERVAL.as_millis() + 1;
    for _ in 0..attempts_max {
        if let Some(value) = condition().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Err(format!("timed out after {timeout:?} waiting for {what}"))
}

/// When the current kill happened and when the first put sent after it was acknowledged.
#[derive(Default)]
struct Probe {
    killed_at: Option<Instant>,
    first_ack: Option<Instant>,
}

/// The cluster under test and its clients.
struct Cluster {
    members: Vec<Member>,
    initial_cluster: String,
    /// One lazily connected channel per member, which reconnects after a restart.
    channels: Vec<Channel>,
}

impl Cluster {
    fn start(options: &Options, dir: &std::path::Path) -> Result<Cluster, String> {
        let mut members = Vec::with_capacity(MEMBERS);
        for index in 0..MEMBERS {
            let name = format!("f{index}");
            members.push(Member {
                client_port: free_port()?,
                peer_port: free_port()?,
                data_dir: dir.join(&name),
                log_path: dir.join(format!("{name}.log")),
                name,
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|member| format!("{}={}", member.name, member.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut channels = Vec::with_capacity(MEMBERS);
        for member in &mut members {
            member.spawn(options, &initial_cluster)?;
            channels.push(
                Endpoint::from_shared(member.endpoint())
                    .map_err(|err| err.to_string())?
                    .connect_timeout(POLL_CALL_TIMEOUT)
                    .connect_lazy(),
            );
        }
        Ok(Cluster {
            members,
            initial_cluster,
            channels,
        })
    }

    fn log_tails(&self) -> String {
        self.members
            .iter()
            .map(Member::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The index of the member all three name as leader, if they agree.
    async fn leader(&self) -> Option<usize> {
        let mut ids = Vec::with_capacity(MEMBERS);
        let mut leaders = Vec::with_capacity(MEMBERS);
        for channel in &self.channels {
            let mut maintenance = MaintenanceClient::new(channel.clone());
            let mut request = tonic::Request::new(StatusRequest {});
            request.set_timeout(POLL_CALL_TIMEOUT);
            let status = maintenance.status(request).await.ok()?.into_inner();
            ids.push(status.header.map_or(0, |header| header.member_id));
            leaders.push(status.leader);
        }
        let leader = leaders[0];
        if leader == 0 || leaders.iter().any(|&other| other != leader) {
            return None;
        }
        ids.iter().position(|&id| id == leader)
    }

    /// Waits until the restarted member `index` holds a key written after its restart.
    async fn wait_caught_up(&self, index: usize, marker: &str) -> Result<(), String> {
        let writer = (index + 1) % MEMBERS;
        poll(
            "the catch-up marker to be written",
            CATCH_UP_TIMEOUT,
            || async move {
                let mut request = tonic::Request::new(PutRequest {
                    key: marker.as_bytes().to_vec().into(),
                    value: b"written".to_vec().into(),
                    ..Default::default()
                });
                request.set_timeout(POLL_CALL_TIMEOUT);
                KvClient::new(self.channels[writer].clone())
                    .put(request)
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await?;
        poll(
            "the restarted member to catch up",
            CATCH_UP_TIMEOUT,
            || async move {
                let mut request = tonic::Request::new(RangeRequest {
                    key: marker.as_bytes().to_vec().into(),
                    serializable: true,
                    ..Default::default()
                });
                request.set_timeout(POLL_CALL_TIMEOUT);
                let response = KvClient::new(self.channels[index].clone())
                    .range(request)
                    .await
                    .ok()?;
                (!response.into_inner().kvs.is_empty()).then_some(())
            },
        )
        .await
    }
}

/// Starts the load: a put every [`SEND_INTERVAL`] whatever earlier puts are doing (so one
/// is sent within that interval of a new leader taking over, rather than after puts stuck on
/// the dead leader time out), through the members in turn, with a bounded number in flight,
/// until `stop`, the count or the deadline. Acknowledgements of puts sent after the current
/// kill are reported to `probe`.
fn start_load(
    cluster: &Cluster,
    options: &Options,
    probe: &Arc<Mutex<Probe>>,
    stop: &Arc<AtomicBool>,
    acked: &Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let kills = options.kills as u64;
    let puts_max = PUTS_PER_KILL_MAX * kills;
    let deadline = Instant::now()
        + TIME_PER_KILL_MAX.saturating_mul(u32::try_from(options.kills).unwrap_or(u32::MAX));
    // A put forwarded to a leader that just died waits for nothing; it counts as failed after
    // two election timeouts, by when a new leader normally took over.
    let put_timeout = options.election_timeout * 2;
    let in_flight_max = usize::try_from(put_timeout.as_millis() / SEND_INTERVAL.as_millis())
        .unwrap_or(usize::MAX)
        .saturating_add(IN_FLIGHT_SLACK);
    let channels = cluster.channels.clone();
    let (probe, stop, acked) = (Arc::clone(probe), Arc::clone(stop), Arc::clone(acked));
    tokio::spawn(async move {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(in_flight_max));
        let mut puts = tokio::task::JoinSet::new();
        let mut ticks = tokio::time::interval(SEND_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for sequence in 0..puts_max {
            ticks.tick().await;
            if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
                break;
            }
            let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                break;
            };
            // Finished puts are reaped as the load goes, so the set holds only puts in flight.
            while puts.try_join_next().is_some() {}
            let member = usize::try_from(sequence).map_or(0, |sequence| sequence % channels.len());
            let mut request = tonic::Request::new(PutRequest {
                key: format!("failover/{sequence:08}").into_bytes().into(),
                value: vec![b'v'; VALUE_BYTES].into(),
                ..Default::default()
            });
            request.set_timeout(put_timeout);
            let mut client = KvClient::new(channels[member].clone());
            let (probe, acked) = (Arc::clone(&probe), Arc::clone(&acked));
            puts.spawn(async move {
                let sent = Instant::now();
                if client.put(request).await.is_ok() {
                    let now = Instant::now();
                    acked.fetch_add(1, Ordering::SeqCst);
                    let mut probe = probe.lock().expect("probe lock");
                    if probe.first_ack.is_none()
                        && probe.killed_at.is_some_and(|killed_at| sent >= killed_at)
                    {
                        probe.first_ack = Some(now);
                    }
                }
                drop(permit);
            });
        }
        while puts.join_next().await.is_some() {}
    })
}

async fn run(options: &Options) -> Result<Vec<Duration>, String> {
    let dir = tempfile::Builder::new()
        .prefix("mnemo-failover-")
        .tempdir()
        .map_err(|err| err.to_string())?;
    let mut cluster = Cluster::start(options, dir.path())?;
    let cluster_ref = &cluster;
    poll("a leader all three agree on", READY_TIMEOUT, || {
        cluster_ref.leader()
    })
    .await
    .map_err(|why| format!("{why}\n{}", cluster_ref.log_tails()))?;

    let probe = Arc::new(Mutex::new(Probe::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let load = start_load(&cluster, options, &probe, &stop, &acked);
    let mut measured = Vec::with_capacity(options.kills);
    let outcome = async {
        for kill in 1..=options.kills {
            let acked_ref = &acked;
            let floor = acked.load(Ordering::SeqCst) + ACKS_BEFORE_KILL;
            poll(
                "the load to be steady before the kill",
                RECOVERY_TIMEOUT,
                || async move { (acked_ref.load(Ordering::SeqCst) >= floor).then_some(()) },
            )
            .await?;
            let cluster_ref = &cluster;
            let leader = poll("a leader all three agree on", READY_TIMEOUT, || {
                cluster_ref.leader()
            })
            .await?;
            *probe.lock().expect("probe lock") = Probe {
                killed_at: Some(Instant::now()),
                first_ack: None,
            };
            cluster.members[leader].kill9()?;
            let probe_ref = &probe;
            let first_ack = poll(
                "a put acknowledged after the kill",
                RECOVERY_TIMEOUT,
                || async move { probe_ref.lock().expect("probe lock").first_ack },
            )
            .await?;
            let killed_at = probe
                .lock()
                .expect("probe lock")
                .killed_at
                .ok_or("no kill time")?;
            let resumed_after = first_ack - killed_at;
            println!(
                "kill={kill} leader={} writes_resumed_ms={:.1} acked_so_far={}",
                cluster.members[leader].name,
                resumed_after.as_secs_f64() * 1000.0,
                acked.load(Ordering::SeqCst)
            );
            measured.push(resumed_after);

            let initial_cluster = cluster.initial_cluster.clone();
            cluster.members[leader].spawn(options, &initial_cluster)?;
            let cluster_ref = &cluster;
            poll(
                "all three members to agree on a leader again",
                READY_TIMEOUT,
                || cluster_ref.leader(),
            )
            .await?;
            cluster
                .wait_caught_up(leader, &format!("failover-marker/{kill}"))
                .await?;
        }
        Ok::<(), String>(())
    }
    .await;
    stop.store(true, Ordering::SeqCst);
    let _ = load.await;
    outcome.map_err(|why| format!("{why}\n{}", cluster.log_tails()))?;
    Ok(measured)
}

/// The median of sorted `values` (the mean of the middle two for an even count).
fn median(sorted: &[Duration]) -> Duration {
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse()?;
    println!(
        "binary={} kills={} election_timeout_ms={} heartbeat_interval_ms={}",
        options.binary.display(),
        options.kills,
        options.election_timeout.as_millis(),
        options.heartbeat_interval.as_millis()
    );
    let mut measured = run(&options).await?;
    measured.sort_unstable();
    let worst = *measured.last().ok_or("nothing measured")?;
    println!(
        "kills={} median_ms={:.1} worst_ms={:.1}",
        measured.len(),
        median(&measured).as_secs_f64() * 1000.0,
        worst.as_secs_f64() * 1000.0
    );
    Ok(())
}
