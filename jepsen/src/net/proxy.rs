//! One TCP proxy per member's peer port, so that partitions cut real connections.
//!
//! Every member advertises its proxy's URL as its peer URL, so all member-to-member traffic (Raft
//! messages, forwarded proposals and read-index requests) passes through the harness. A mnemo
//! member sends to a peer over a connection *it* dialed to that peer's advertised URL, so the
//! proxy in front of the receiver sees the traffic of every directed link that ends there. To cut
//! the link between `a` and `b` both ways, the proxies must close `a`'s connections into `b`'s
//! proxy and `b`'s into `a`'s: a proxy therefore learns which member opened each connection it
//! accepts, from the kernel's socket table (`/proc/net/tcp`) and the members' descriptors
//! (`/proc/<pid>/fd`), and applies the cut per link.
//!
//! Owns: the listeners, the proxied connections, the set of cut links and the delay of slow
//! links. A cut link refuses new connections (accepted, then closed at once) and closes open
//! ones; a slow link holds every chunk of bytes for its delay before passing it on, in order, in
//! both directions (latency without a bandwidth cap, which `tc netem` would give but this kernel
//! lacks, jepsen.md §5); [`PeerNetwork::heal`] restores every link, and members redial on their
//! own.
//!
//! Must not: signal or start processes (it only reads `/proc`), touch client ports, or bind
//! anything but 127.0.0.1. The proxies run on a runtime of their own, so peer traffic keeps its
//! pace whatever the workload's runtime is doing; dropping the [`PeerNetwork`] shuts it down and
//! closes every proxied connection.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Worker threads of the proxies' runtime: peer traffic is light; two keep one slow connection
/// from delaying the others.
const PROXY_THREADS: usize = 2;
/// How often [`PeerNetwork::wait_cut`] looks at the open connections.
const CUT_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Bytes read from one side at a time.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks of one direction held back at most; the reader waits for room beyond that, which
/// bounds the proxy's memory on a slow link (64 × 64 KiB = 4 MiB per direction).
const CHUNKS_IN_FLIGHT_MAX: usize = 64;

/// A link between two members, smaller index first.
pub type Link = (usize, usize);

/// The link between `a` and `b`, in canonical order.
#[must_use]
pub fn link(a: usize, b: usize) -> Link {
    (a.min(b), a.max(b))
}

/// What the proxies share.
struct Shared {
    /// Links cut both ways. Connection tasks watch it and close when their link is cut.
    cut: watch::Sender<BTreeSet<Link>>,
    /// Links slowed both ways, with the delay each chunk gets. Read per chunk, so a change
    /// applies to open connections at once.
    delays: watch::Sender<BTreeMap<Link, Duration>>,
    /// PID of each member's running process, by member index, to tell who opened a connection.
    /// Locked only to read or write the vector, never across an await.
    pids: Mutex<Vec<Option<u32>>>,
    /// Connections that may carry bytes: (source member if known, target member), by a number
    /// unique to each. Locked only to insert, remove or scan, never across an await.
    live: Mutex<BTreeMap<u64, (Option<usize>, usize)>>,
    /// The next number for `live`.
    next_connection: AtomicU64,
}

/// Whether a connection from `source` into `target`'s proxy may carry traffic. A connection whose
/// source could not be told is refused while any link of `target` is cut: it might come from the
/// other end of that link, and refusing a healthy member only makes it dial again.
fn allowed(cut: &BTreeSet<Link>, source: Option<usize>, target: usize) -> bool {
    match source {
        Some(source) => !cut.contains(&link(source, target)),
        None => !cut.iter().any(|&(a, b)| a == target || b == target),
    }
}

/// The proxies of one cluster.
pub struct PeerNetwork {
    shared: Arc<Shared>,
    proxies: Vec<Proxy>,
    /// Runs every proxy; `None` only during drop.
    runtime: Option<tokio::runtime::Runtime>,
}

struct Proxy {
    port: u16,
    /// The member's real peer port, 0 until set.
    target: Arc<Mutex<u16>>,
    accept_task: JoinHandle<()>,
}

impl PeerNetwork {
    /// Starts one proxy per member, each on a fresh loopback port it keeps for the whole run.
    ///
    /// # Errors
    /// When the runtime cannot start or a port cannot be bound.
    pub fn start(members: usize) -> std::io::Result<PeerNetwork> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(PROXY_THREADS)
            .thread_name("peer-proxy")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            cut: watch::Sender::new(BTreeSet::new()),
            delays: watch::Sender::new(BTreeMap::new()),
            pids: Mutex::new(vec![None; members]),
            live: Mutex::new(BTreeMap::new()),
            next_connection: AtomicU64::new(0),
        });
        let mut proxies = Vec::with_capacity(members);
        for member in 0..members {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            let address = listener.local_addr()?;
            let target = Arc::new(Mutex::new(0));
            let accept_target = Arc::clone(&target);
            let accept_shared = Arc::clone(&shared);
            let accept_task = runtime.spawn(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        accept_loop(listener, address, member, accept_target, accept_shared).await;
                    }
                    Err(error) => eprintln!("proxy of member {member}: {error}"),
                }
            });
            proxies.push(Proxy {
                port: address.port(),
                target,
                accept_task,
            });
        }
        Ok(PeerNetwork {
            shared,
            proxies,
            runtime: Some(runtime),
        })
    }

    /// The URL `member` advertises as its peer URL and the others dial.
    #[must_use]
    pub fn url(&self, member: usize) -> String {
        format!("http://127.0.0.1:{}", self.proxies[member].port)
    }

    /// Points `member`'s proxy at the member's real peer port.
    pub fn set_target(&self, member: usize, port: u16) {
        *self.proxies[member]
            .target
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = port;
    }

    /// Records `member`'s process, or `None` while it is down.
    pub fn set_pid(&self, member: usize, pid: Option<u32>) {
        self.shared
            .pids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)[member] = pid;
    }

    /// Cuts `links` (in addition to those already cut).
    pub fn cut(&self, links: &[Link]) {
        self.shared.cut.send_modify(|cut| {
            cut.extend(links.iter().map(|&(a, b)| link(a, b)));
        });
    }

    /// Cuts every link of `member`.
    pub fn isolate(&self, member: usize) {
        let links: Vec<Link> = (0..self.proxies.len())
            .filter(|&other| other != member)
            .map(|other| link(member, other))
            .collect();
        self.cut(&links);
    }

    /// The links cut now.
    #[must_use]
    pub fn cut_links(&self) -> BTreeSet<Link> {
        self.shared.cut.borrow().clone()
    }

    /// Slows `links` by `delay` each way (replacing an earlier delay of the same links).
    pub fn slow(&self, links: &[Link], delay: Duration) {
        self.shared.delays.send_modify(|delays| {
            for &(a, b) in links {
                delays.insert(link(a, b), delay);
            }
        });
    }

    /// Every link between two of the `members` members.
    #[must_use]
    pub fn all_links(&self) -> Vec<Link> {
        let members = self.proxies.len();
        (0..members)
            .flat_map(|a| (a + 1..members).map(move |b| (a, b)))
            .collect()
    }

    /// Restores every link: nothing cut, nothing slowed.
    pub fn heal(&self) {
        self.shared.cut.send_modify(BTreeSet::clear);
        self.shared.delays.send_modify(BTreeMap::clear);
    }

    /// Waits up to `timeout` until no open connection crosses a cut link; true if none does.
    pub async fn wait_cut(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        // Bounded by the deadline; one pass per poll interval.
        loop {
            if !self.crossing_cut() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(CUT_POLL_INTERVAL).await;
        }
    }

    fn crossing_cut(&self) -> bool {
        let cut = self.shared.cut.borrow().clone();
        let live = self
            .shared
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        live.values()
            .any(|&(source, target)| !allowed(&cut, source, target))
    }
}

impl Drop for PeerNetwork {
    fn drop(&mut self) {
        for proxy in &self.proxies {
            proxy.accept_task.abort();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Keeps a connection listed in [`Shared::live`] while it lives.
struct LiveConnection<'a> {
    shared: &'a Shared,
    number: u64,
}

impl<'a> LiveConnection<'a> {
    fn register(shared: &'a Shared, source: Option<usize>, target: usize) -> Self {
        let number = shared.next_connection.fetch_add(1, Ordering::SeqCst);
        shared
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(number, (source, target));
        LiveConnection { shared, number }
    }
}

impl Drop for LiveConnection<'_> {
    fn drop(&mut self) {
        self.shared
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.number);
    }
}

/// Accepts connections for `target`'s proxy until aborted; each is served by its own task.
async fn accept_loop(
    listener: TcpListener,
    proxy: SocketAddr,
    target: usize,
    target_port: Arc<Mutex<u16>>,
    shared: Arc<Shared>,
) {
    // One iteration per accepted connection, for as long as the network lives: the task is
    // aborted when the network is dropped.
    loop {
        let Ok((inbound, from)) = listener.accept().await else {
            continue;
        };
        let port = *target_port.lock().unwrap_or_else(PoisonError::into_inner);
        tokio::spawn(serve_connection(
            inbound,
            from,
            proxy,
            target,
            port,
            Arc::clone(&shared),
        ));
    }
}

async fn serve_connection(
    mut inbound: TcpStream,
    from: SocketAddr,
    proxy: SocketAddr,
    target: usize,
    target_port: u16,
    shared: Arc<Shared>,
) {
    let mut cut = shared.cut.subscribe();
    let pids: Vec<(usize, u32)> = shared
        .pids
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .enumerate()
        .filter_map(|(member, pid)| pid.map(|pid| (member, pid)))
        .collect();
    let source = tokio::task::spawn_blocking(move || connection_owner(from, proxy, &pids))
        .await
        .ok()
        .flatten();
    // Listed before the check, so a cut that lands between the two is seen either by the check
    // or by the watch below, and `wait_cut` waits for this connection to close.
    let _live = LiveConnection::register(&shared, source, target);
    if target_port == 0 || !allowed(&cut.borrow_and_update(), source, target) {
        // Refused: the peer sees the connection close at once.
        let _ = inbound.shutdown().await;
        return;
    }
    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target_port)).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let closed_by_cut = async {
        // Ends when the link is cut, or when the network is gone.
        while cut.changed().await.is_ok() {
            if !allowed(&cut.borrow_and_update(), source, target) {
                return;
            }
        }
    };
    let delay = || link_delay(&shared.delays.borrow(), source, target);
    let (inbound_read, inbound_write) = inbound.into_split();
    let (outbound_read, outbound_write) = outbound.into_split();
    let both_ways = async {
        tokio::join!(
            pump(inbound_read, outbound_write, &delay),
            pump(outbound_read, inbound_write, &delay)
        )
    };
    tokio::select! {
        _ = both_ways => {}
        () = closed_by_cut => {}
    }
    // Dropping both streams closes them.
}

/// The delay of the link a connection from `source` into `target` uses. An unknown source
/// gets the largest delay of `target`'s links, as it might come from the slow end.
fn link_delay(delays: &BTreeMap<Link, Duration>, source: Option<usize>, target: usize) -> Duration {
    match source {
        Some(source) => delays
            .get(&link(source, target))
            .copied()
            .unwrap_or_default(),
        None => delays
            .iter()
            .filter(|&(&(a, b), _)| a == target || b == target)
            .map(|(_, &delay)| delay)
            .max()
            .unwrap_or_default(),
    }
}

/// Copies one direction of a connection, holding each chunk until `delay()` (read when the chunk
/// arrives) has passed since it was read. Chunks leave in the order they came, so a delay that
/// shrinks never reorders bytes. Ends at end of stream or on an error of either side, and then
/// half-closes the writing side so the other direction can finish.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: &impl Fn() -> Duration) {
    let (queue, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT_MAX);
    let reader = async move {
        // One chunk per iteration until the stream ends or the writer is gone.
        loop {
            let mut chunk = vec![0_u8; CHUNK_BYTES];
            let read = match from.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            chunk.truncate(read);
            let release = Instant::now() + delay();
            if queue.send((release, chunk)).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((release, chunk)) = due.recv().await {
            tokio::time::sleep_until(release.into()).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Which member's process owns the client end of the connection the proxy at `proxy` accepted
/// from `from`, among `pids` (member index, process id). Also used by mnemo's own cluster
/// test harness, which proxies peer links the same way.
///
/// The kernel lists every IPv4 TCP socket in `/proc/net/tcp` with its inode; the client end is
/// the one whose local port is `from`'s and whose remote port is the proxy's. The process holding
/// a descriptor `socket:[inode]` opened it. Only ports are compared: everything is on 127.0.0.1,
/// and the file prints addresses in the host's byte order.
#[must_use]
pub fn connection_owner(
    from: SocketAddr,
    proxy: SocketAddr,
    pids: &[(usize, u32)],
) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port_of = |address: &str| {
        address
            .rsplit_once(':')
            .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
    };
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
        // Sockets in TIME_WAIT keep their addresses but have inode 0 and no owner.
        let owned = *inode != "0";
        (owned && port_of(local)? == from.port() && port_of(remote)? == proxy.port())
            .then(|| (*inode).to_owned())
    })?;
    let wanted = format!("socket:[{inode}]");
    pids.iter().find_map(|&(member, pid)| {
        let descriptors = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        descriptors
            .filter_map(Result::ok)
            .any(|entry| {
                std::fs::read_link(entry.path())
                    .is_ok_and(|link| link.as_os_str() == wanted.as_str())
            })
            .then_some(member)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_link_blocks_both_directions_and_unknown_sources_near_it() {
        let cut: BTreeSet<Link> = [link(2, 0)].into_iter().collect();
        assert!(!allowed(&cut, Some(0), 2));
        assert!(!allowed(&cut, Some(2), 0));
        assert!(allowed(&cut, Some(1), 2));
        assert!(allowed(&cut, Some(0), 1));
        assert!(!allowed(&cut, None, 2));
        assert!(allowed(&cut, None, 1));
        assert!(allowed(&BTreeSet::new(), None, 1));
    }

    #[tokio::test]
    async fn proxies_forward_until_cut_and_again_after_heal() {
        // A stand-in member: echoes one message per connection.
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            for _ in 0..8 {
                let Ok((mut stream, _)) = server.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buffer = [0_u8; 4];
                    if stream.read_exact(&mut buffer).await.is_ok() {
                        let _ = stream.write_all(&buffer).await;
                    }
                });
            }
        });
        let network = PeerNetwork::start(2).unwrap();
        network.set_target(1, server_port);
        let address = network.url(1).trim_start_matches("http://").to_owned();
        let echo = |address: String| async move {
            let mut stream = TcpStream::connect(address).await.ok()?;
            stream.write_all(b"ping").await.ok()?;
            let mut buffer = [0_u8; 4];
            tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut buffer))
                .await
                .ok()?
                .ok()?;
            Some(buffer)
        };
        assert_eq!(echo(address.clone()).await, Some(*b"ping"));
        // This process is no member, so its connections have an unknown source: refused while
        // a link of member 1 is cut.
        network.isolate(1);
        assert_eq!(echo(address.clone()).await, None);
        assert!(network.wait_cut(Duration::from_secs(2)).await);
        network.heal();
        assert_eq!(echo(address.clone()).await, Some(*b"ping"));

        // A slow link holds the request and the reply for the delay each way.
        network.slow(&network.all_links(), Duration::from_millis(300));
        let started = Instant::now();
        assert_eq!(echo(address.clone()).await, Some(*b"ping"));
        let slowed = started.elapsed();
        assert!(
            slowed >= Duration::from_millis(600),
            "round trip {slowed:?}"
        );
        network.heal();
        let started = Instant::now();
        assert_eq!(echo(address).await, Some(*b"ping"));
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "healed round trip {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn an_unknown_source_gets_the_slowest_delay_of_the_target() {
        let delays: BTreeMap<Link, Duration> = [
            (link(0, 1), Duration::from_millis(100)),
            (link(1, 2), Duration::from_millis(250)),
        ]
        .into_iter()
        .collect();
        assert_eq!(link_delay(&delays, Some(0), 1), Duration::from_millis(100));
        assert_eq!(link_delay(&delays, Some(2), 0), Duration::ZERO);
        assert_eq!(link_delay(&delays, None, 1), Duration::from_millis(250));
        assert_eq!(link_delay(&delays, None, 0), Duration::from_millis(100));
    }
}
