//! Test harness: runs `mnemo` members as child processes on free loopback ports with a
//! temporary data directory, and talks to them over gRPC, etcdctl and raw HTTP/1.1.
//! `cluster` builds multi-member clusters out of these members; `lease` holds the lease tests'
//! keepalive and watch helpers.
//!
//! Rules every helper keeps: only 127.0.0.1 is used; only processes started here are signalled,
//! by PID through their `Child` handle; every wait polls a condition under a deadline and an
//! attempt cap, so a broken member fails a test instead of hanging it.

pub mod cluster;
pub mod etcdctl_child;
pub mod lease;

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use mnemo::pb::etcdserverpb::cluster_client::ClusterClient;
use mnemo::pb::etcdserverpb::kv_client::KvClient;
use mnemo::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use mnemo::pb::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::{Channel, Endpoint};

/// How long a member may take from spawn to answering `/health` with 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a member may take to exit after SIGTERM or SIGKILL.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one gRPC call; nothing a test sends should take this long.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one raw HTTP request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two checks of a polled condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Largest gRPC response the test clients accept (whole-store ranges are several MB).
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Spawn attempts when another process grabbed a port between picking and binding it.
const START_ATTEMPTS_MAX: usize = 3;

/// Ports asked of the OS before one not yet handed out in this test process turns up.
const FREE_PORT_ATTEMPTS_MAX: usize = 64;

/// Returns a loopback port that was free a moment ago: binds port 0, reads the port, and
/// releases it for the member to bind. The OS may give a released port out again, so a port
/// already handed out by this process (to a member that may not have bound it yet) is never
/// returned twice.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..FREE_PORT_ATTEMPTS_MAX {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("local_addr of a bound listener")
            .port();
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no loopback port that was not handed out already in {FREE_PORT_ATTEMPTS_MAX} tries");
}

/// The server to run: the `mnemo` binary of this build, unless `MNEMO_IT_SERVER` names another
/// server that takes etcd's flags (for example `/usr/bin/etcd`, to check that the expectations
/// encoded here are etcd's own).
pub fn server_binary() -> PathBuf {
    std::env::var_os("MNEMO_IT_SERVER")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mnemo")), PathBuf::from)
}

/// Whether the server under test is this build's `mnemo` (not a `MNEMO_IT_SERVER` override).
pub fn testing_mnemo() -> bool {
    std::env::var_os("MNEMO_IT_SERVER").is_none()
}

/// Polls `condition` every [`POLL_INTERVAL`] until it returns `Some`, for at most `timeout`
/// (and a matching number of attempts). Panics naming `what` when the deadline passes.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let attempts_max = timeout.as_millis() / POLL_INTERVAL.as_millis() + 1;
    for _ in 0..attempts_max {
        if let Some(value) = condition().await {
            return value;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// etcd's clustering flags for a member of a multi-member cluster. A member without them
/// starts a single-member cluster of its own, advertising its real peer URL.
#[derive(Clone, Debug)]
pub struct ClusterFlags {
    /// `--initial-advertise-peer-urls`: the URL the other members dial, which may be a proxy's
    /// rather than the member's own peer port.
    pub advertise_peer_url: String,
    /// `--initial-cluster`: `name=url,...`, the same on every member started with it.
    pub initial_cluster: String,
    /// `--initial-cluster-state`: `new` for founding members, `existing` for added ones.
    pub state: &'static str,
    /// `--initial-cluster-token`.
    pub token: String,
    /// Further flags passed as they are (timeouts, `--snapshot-count`).
    pub extra_args: Vec<String>,
}

/// One `mnemo` process, its ports and its data directory.
///
/// The data directory and the log outlive restarts; dropping the member kills the process
/// (if it still runs) and removes the directory.
pub struct Member {
    name: String,
    /// Holds `data/` (the member's `--data-dir`) and `member.log` (stdout and stderr).
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    /// `None` for a single-member cluster.
    cluster: Option<ClusterFlags>,
    /// Flags a single-member cluster passes as they are (a clustered member takes them from
    /// its [`ClusterFlags`]).
    extra_args: Vec<String>,
    /// The server binary; `None` runs [`server_binary`].
    binary: Option<PathBuf>,
    child: Option<Child>,
}

impl Member {
    /// Starts a fresh single-member cluster named `infra0` and waits until it serves.
    pub async fn start() -> Member {
        Member::start_named("infra0").await
    }

    /// Starts a fresh single-member cluster with member name `name` and waits until it serves.
    pub async fn start_named(name: &str) -> Member {
        Member::start_with_flags(name, &[]).await
    }

    /// Starts a fresh single-member cluster named `name` with `extra_args` added to its
    /// command line (for example `--experimental-watch-progress-notify-interval=500ms`), and
    /// waits until it serves.
    pub async fn start_with_flags(name: &str, extra_args: &[&str]) -> Member {
        Member::start_binary(name, None, extra_args).await
    }

    /// Starts a fresh single-member cluster named `name` running `binary` (for example
    /// `/usr/bin/etcd`, to compare mnemo with etcd in one test) instead of [`server_binary`].
    pub async fn start_with_binary(name: &str, binary: PathBuf) -> Member {
        Member::start_binary(name, Some(binary), &[]).await
    }

    async fn start_binary(name: &str, binary: Option<PathBuf>, extra_args: &[&str]) -> Member {
        let mut member = Member::unstarted(name, None);
        member.extra_args = extra_args.iter().map(|arg| (*arg).to_owned()).collect();
        member.binary = binary;
        for attempt in 1..=START_ATTEMPTS_MAX {
            if !member.pick_ports() {
                continue;
            }
            member.spawn();
            match member.wait_ready().await {
                Ok(()) => return member,
                Err(why) if attempt < START_ATTEMPTS_MAX && member.lost_port_race() => {
                    eprintln!("member {name}: port taken before it could bind ({why}); retrying");
                    let _ = std::fs::remove_dir_all(member.data_dir());
                }
                Err(why) => panic!(
                    "member {name} did not become ready: {why}\n{}",
                    member.log_tail()
                ),
            }
        }
        panic!(
            "member {name}: no start attempt succeeded\n{}",
            member.log_tail()
        );
    }

    /// A member that is not started yet, with a fresh directory and no ports picked.
    pub fn unstarted(name: &str, cluster: Option<ClusterFlags>) -> Member {
        let dir = tempfile::Builder::new()
            .prefix("mnemo-it-")
            .tempdir()
            .expect("create a temp dir");
        Member {
            name: name.to_owned(),
            dir,
            client_port: 0,
            peer_port: 0,
            cluster,
            extra_args: Vec::new(),
            binary: None,
            child: None,
        }
    }

    /// Adds flags to the ones the next start passes (clustered or not).
    pub fn push_args(&mut self, args: &[&str]) {
        assert!(self.child.is_none(), "flags change only while stopped");
        let extra = match self.cluster.as_mut() {
            Some(flags) => &mut flags.extra_args,
            None => &mut self.extra_args,
        };
        extra.extend(args.iter().map(|arg| (*arg).to_owned()));
    }

    /// Sets the clustering flags the next start uses.
    pub fn set_cluster(&mut self, cluster: ClusterFlags) {
        assert!(self.child.is_none(), "flags change only while stopped");
        self.cluster = Some(cluster);
    }

    /// Runs `binary` (for example `/usr/bin/etcd`) instead of [`server_binary`] from the next
    /// start on.
    pub fn set_binary(&mut self, binary: PathBuf) {
        assert!(
            self.child.is_none(),
            "the binary changes only while stopped"
        );
        self.binary = Some(binary);
    }

    /// Picks fresh client and peer ports; false when both came out equal (pick again).
    pub fn pick_ports(&mut self) -> bool {
        assert!(self.child.is_none(), "ports change only while stopped");
        self.client_port = free_port();
        self.peer_port = free_port();
        self.peer_port != self.client_port
    }

    /// The member's name (`--name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The real peer port, where the member listens (its advertised URL may be a proxy's).
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The peer URL, `http://127.0.0.1:<port>`.
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The client address.
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// The `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("member.log")
    }

    /// Everything the member printed so far, over all its runs.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the process is running (it has not been stopped by this harness or exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(child) => matches!(child.try_wait(), Ok(None)),
        }
    }

    /// Starts the process without waiting for it to serve; see [`Member::wait_ready`].
    pub fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "member {} is already running",
            self.name
        );
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the member log");
        let log_err = log.try_clone().expect("clone the member log handle");
        let endpoint = self.endpoint();
        let peer_url = self.peer_url();
        let alone = ClusterFlags {
            advertise_peer_url: peer_url.clone(),
            initial_cluster: format!("{}={}", self.name, peer_url),
            state: "new",
            token: format!("it-{}", self.client_port),
            extra_args: self.extra_args.clone(),
        };
        let flags = self.cluster.as_ref().unwrap_or(&alone);
        let binary = self.binary.clone().unwrap_or_else(server_binary);
        let child = Command::new(binary)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen-client-urls")
            .arg(&endpoint)
            .arg("--advertise-client-urls")
            .arg(&endpoint)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&flags.advertise_peer_url)
            .arg("--initial-cluster")
            .arg(&flags.initial_cluster)
            .arg("--initial-cluster-state")
            .arg(flags.state)
            .arg("--initial-cluster-token")
            .arg(&flags.token)
            .args(&flags.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawn the mnemo binary");
        self.child = Some(child);
    }

    /// Waits until `/health` answers 200 with `"health":"true"`, or fails early if the process
    /// exits.
    pub async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let attempts_max = READY_TIMEOUT.as_millis() / POLL_INTERVAL.as_millis() + 1;
        let mut last = String::from("no answer yet");
        for _ in 0..attempts_max {
            let child = self.child.as_mut().expect("wait_ready on a stopped member");
            if let Some(status) = child.try_wait().expect("try_wait on the member") {
                self.child = None;
                return Err(format!("process exited with {status} before serving"));
            }
            match http_get(self.client_addr(), "/health").await {
                Ok(response)
                    if response.status == 200 && response.body_text().contains("\"true\"") =>
                {
                    return Ok(());
                }
                Ok(response) => {
                    last = format!(
                        "/health answered {} {}",
                        response.status,
                        response.body_text()
                    )
                }
                Err(err) => last = format!("/health failed: {err}"),
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Err(format!("not healthy after {READY_TIMEOUT:?}; last: {last}"))
    }

    /// Whether the process exited because a port it was given was taken by someone else.
    pub fn lost_port_race(&mut self) -> bool {
        let exited = !self.is_running();
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        exited && (log.contains("in use") || log.contains("AddrInUse"))
    }

    /// The last lines of the member's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!(
            "--- last lines of {} ---\n{}",
            self.log_path().display(),
            lines[start..].join("\n")
        )
    }

    /// The PID of the running process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("member is not running").id()
    }

    /// Kills the process with SIGKILL (`kill -9`) and reaps it.
    pub fn kill9(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("kill9 on a member that is not running");
        child.kill().expect("send SIGKILL to the member");
        child.wait().expect("reap the killed member")
    }

    /// Sends `signal` (a name such as `TERM`, `STOP` or `CONT`) to the running process, by
    /// its PID.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|err| panic!("run kill -{signal}: {err}"));
        assert!(sent.success(), "kill -{signal} {pid} failed: {sent}");
    }

    /// Waits up to `timeout` for the process to exit by itself and reaps it; `None` while it
    /// still runs at the deadline (it is left running).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let attempts_max = timeout.as_millis() / POLL_INTERVAL.as_millis() + 1;
        for _ in 0..attempts_max {
            let child = self.child.as_mut().expect("wait_exit on a stopped member");
            if let Some(status) = child.try_wait().expect("try_wait on the member") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        None
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        if let Some(status) = self.wait_exit(EXIT_TIMEOUT).await {
            return status;
        }
        self.kill9();
        panic!(
            "member {} did not exit within {EXIT_TIMEOUT:?} of SIGTERM\n{}",
            self.name,
            self.log_tail()
        );
    }

    /// Starts the stopped member again on the same data directory and ports, and waits until it
    /// serves.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart needs a stopped member");
        self.spawn();
        if let Err(why) = self.wait_ready().await {
            panic!(
                "member {} did not come back after restart: {why}\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// A gRPC channel to the member with connect and per-call deadlines.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.endpoint())
            .expect("a valid endpoint URL")
            .connect_timeout(Duration::from_secs(5))
            .timeout(RPC_TIMEOUT)
            .connect()
            .await
            .unwrap_or_else(|err| {
                panic!("connect to {}: {err}\n{}", self.endpoint(), self.log_tail())
            })
    }

    /// A gRPC channel that connects on first use and never panics: for members that may be
    /// down, paused or cut off. Every call fails after `call_timeout`.
    pub fn lazy_channel(&self, call_timeout: Duration) -> Channel {
        Endpoint::from_shared(self.endpoint())
            .expect("a valid endpoint URL")
            .connect_timeout(call_timeout)
            .timeout(call_timeout)
            .connect_lazy()
    }

    /// A KV client that accepts large responses.
    pub async fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel().await)
            .max_decoding_message_size(RESPONSE_BYTES_MAX)
            .max_encoding_message_size(RESPONSE_BYTES_MAX)
    }

    /// A Maintenance client.
    pub async fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel().await)
    }

    /// A Cluster client.
    pub async fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel().await)
    }

    /// Runs etcdctl against this member; see [`etcdctl`].
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl(&self.endpoint(), args, None)
    }

    /// Runs etcdctl against this member with `stdin` as its standard input.
    pub fn etcdctl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        etcdctl(&self.endpoint(), args, Some(stdin))
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

/// Where etcdctl is; fails the test (never skips it) when it is not installed.
pub fn etcdctl_path() -> PathBuf {
    let from_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("etcdctl"));
    let candidates = from_path.chain(std::iter::once(PathBuf::from("/usr/bin/etcdctl")));
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "etcdctl is not installed (not in PATH nor /usr/bin): run scripts/setup, which installs \
         etcd-client (etcdctl 3.4) — the etcdctl compatibility tests cannot run without it"
    );
}

/// Runs `etcdctl --endpoints=<endpoint> <args>` with the v3 API and bounded dial and command
/// timeouts, optionally feeding `stdin`, and returns its output. `ETCDCTL_*` variables of the
/// caller's environment are removed so they cannot redirect it.
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = etcdctl_command(endpoint, args);
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn etcdctl");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("etcdctl stdin pipe");
        pipe.write_all(input.as_bytes())
            .expect("write etcdctl stdin");
        // Dropping the pipe closes it, which ends etcdctl's input.
    }
    child.wait_with_output().expect("wait for etcdctl")
}

/// The command `etcdctl --endpoints=<endpoint> <args>` with the v3 API and bounded dial and
/// command timeouts, without the caller's `ETCDCTL_*` variables; standard streams are the
/// caller's to set.
pub fn etcdctl_command(endpoint: &str, args: &[&str]) -> Command {
    let mut command = Command::new(etcdctl_path());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ETCDCTL_") {
            command.env_remove(name);
        }
    }
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=10s")
        .args(args);
    command
}

/// etcdctl's standard output as text.
pub fn stdout_of(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("etcdctl stdout is UTF-8")
}

/// etcdctl's standard error as text.
pub fn stderr_of(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("etcdctl stderr is UTF-8")
}

/// Asserts etcdctl succeeded and returns its standard output.
#[track_caller]
pub fn ok_stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "etcdctl failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout_of(output),
        stderr_of(output)
    );
    stdout_of(output)
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as (lossy) UTF-8 text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Sends `GET <path> HTTP/1.1` with `Connection: close` over a plain TCP stream and parses the
/// answer (content-length, chunked, or read-to-close bodies). Bounded by [`HTTP_TIMEOUT`].
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    http_exchange(addr, "GET", path, "*/*", None).await
}

/// Sends `<method> <path> HTTP/1.1` with `Connection: close` and, when given, a body with
/// its Content-Type, and parses the answer. Bounded by [`HTTP_TIMEOUT`].
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> std::io::Result<HttpResponse> {
    http_exchange(addr, method, path, "application/json", body).await
}

async fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    accept: &str,
    body: Option<(&str, &[u8])>,
) -> std::io::Result<HttpResponse> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n"
        );
        if let Some((content_type, bytes)) = body {
            request.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                bytes.len()
            ));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        if let Some((_, bytes)) = body {
            stream.write_all(bytes).await?;
        }
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_http_response(&raw)
    };
    match tokio::time::timeout(HTTP_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{method} {path} took over {HTTP_TIMEOUT:?}"),
        )),
    }
}

fn parse_http_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
    let head_end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let head =
        std::str::from_utf8(&raw[..head_end]).map_err(|_| invalid("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| invalid("no status line"))?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(&format!(
            "not an HTTP/1 status line: {status_line:?}"
        )));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("bad status code"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid("malformed header"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let rest = &raw[head_end + 4..];
    let chunked = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        decode_chunked(rest).ok_or_else(|| invalid("malformed chunked body"))?
    } else if let Some((_, length)) = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
    {
        let length: usize = length.parse().map_err(|_| invalid("bad content-length"))?;
        rest.get(..length)
            .ok_or_else(|| invalid("body shorter than content-length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn decode_chunked(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    // Each chunk holds at least one byte, so there are never more chunks than body bytes.
    for _ in 0..=rest.len() {
        let line_end = rest.windows(2).position(|window| window == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
    None
}

// ---- small gRPC conveniences shared by the modules ----

/// Puts `key` = `value` and returns the response; panics on error.
pub async fn put(
    kv: &mut KvClient<Channel>,
    key: impl AsRef<[u8]>,
    value: impl AsRef<[u8]>,
) -> PutResponse {
    let request = PutRequest {
        key: key.as_ref().to_vec().into(),
        value: value.as_ref().to_vec().into(),
        ..Default::default()
    };
    kv.put(request)
        .await
        .unwrap_or_else(|status| panic!("put failed: {status:?}"))
        .into_inner()
}

/// Runs a Range; panics on error.
pub async fn range(kv: &mut KvClient<Channel>, request: RangeRequest) -> RangeResponse {
    let shown = format!("{request:?}");
    kv.range(request)
        .await
        .unwrap_or_else(|status| panic!("range {shown} failed: {status:?}"))
        .into_inner()
}

/// Runs a DeleteRange; panics on error.
pub async fn delete(
    kv: &mut KvClient<Channel>,
    request: DeleteRangeRequest,
) -> DeleteRangeResponse {
    let shown = format!("{request:?}");
    kv.delete_range(request)
        .await
        .unwrap_or_else(|status| panic!("delete {shown} failed: {status:?}"))
        .into_inner()
}

/// The header revision of a response, or 0 when it has no header.
pub fn header_revision<H: HasHeader>(response: &H) -> i64 {
    response.header_ref().map_or(0, |header| header.revision)
}

/// Responses with a `header` field.
pub trait HasHeader {
    fn header_ref(&self) -> Option<&mnemo::pb::etcdserverpb::ResponseHeader>;
}

macro_rules! has_header {
    ($($ty:ident),* $(,)?) => {$(
        impl HasHeader for mnemo::pb::etcdserverpb::$ty {
            fn header_ref(&self) -> Option<&mnemo::pb::etcdserverpb::ResponseHeader> {
                self.header.as_ref()
            }
        }
    )*};
}

has_header!(
    RangeResponse,
    PutResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse,
    StatusResponse,
    MemberListResponse,
);

/// Asserts `result` failed with gRPC `code` and exactly `message`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    message: &str,
) {
    match result {
        Ok(value) => panic!("expected {code:?} {message:?}, got success: {value:?}"),
        Err(status) => {
            assert_eq!(
                (status.code(), status.message()),
                (code, message),
                "wrong error (full status: {status:?})"
            );
        }
    }
}

/// Parses "MAJOR.MINOR.PATCH" (ignoring any pre-release or build suffix) into numbers.
pub fn parse_semver(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// Asserts etcdctl failed with a stderr line exactly `error_line` and printed nothing on
/// stdout.
#[track_caller]
pub fn assert_fails_with(output: &Output, error_line: &str) {
    assert!(
        !output.status.success(),
        "expected failure, got success: {}",
        stdout_of(output)
    );
    let stderr = stderr_of(output);
    assert!(
        stderr.lines().any(|line| line == error_line),
        "stderr lacks {error_line:?}:\n{stderr}"
    );
    assert_eq!(stdout_of(output), "", "nothing on stdout when failing");
}
