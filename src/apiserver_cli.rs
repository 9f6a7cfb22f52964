//! `mnemo apiserver`: flags and startup of the Kubernetes-style API server, on an embedded
//! member (the default) or on an etcd v3 cluster (`--etcd-endpoints`). Part of the binary,
//! not the library: it composes `embed` and `apiserver`, which must not know each other.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mnemo::apiserver::{
    self, COMPACTION_INTERVAL_DEFAULT, EVENT_TTL_DEFAULT, EVENT_TTL_MAX, Options,
};
use mnemo::client::{ClientError, GrpcClient, KvClient};
use mnemo::embed::{Config, Node, parse_urls};
use mnemo::limits::SHUTDOWN_DRAIN;
use mnemo::tls::ClientTls;

/// A thin Kubernetes-style API server (kubectl 1.32 works against it) over mnemo or etcd.
#[derive(Parser, Debug)]
#[command(bin_name = "mnemo apiserver")]
struct ApiserverFlags {
    /// Address to serve the Kubernetes API on (plain HTTP/1.1).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// etcd v3 endpoints (URL[,URL]) to store objects in; calls are balanced over all of
    /// them and skip one that is down. Without it, an embedded member runs in this process.
    #[arg(long)]
    etcd_endpoints: Option<String>,
    /// CA that signed the etcd members' certificates, for https:// endpoints (as
    /// kube-apiserver's --etcd-cafile).
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    /// Client certificate presented to etcd members that require one (--etcd-certfile).
    #[arg(long, requires = "etcd_keyfile")]
    etcd_certfile: Option<PathBuf>,
    /// Key of the client certificate (--etcd-keyfile).
    #[arg(long, requires = "etcd_certfile")]
    etcd_keyfile: Option<PathBuf>,
    /// Data directory of the embedded member.
    #[arg(long, default_value = "default.apiserver")]
    data_dir: PathBuf,
    /// Client URLs of the embedded member (etcdctl can read the objects there).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    listen_client_urls: String,
    /// Peer URLs of the embedded member.
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    listen_peer_urls: String,
    /// How often to compact history, as kube-apiserver's --etcd-compaction-interval
    /// (e.g. 5m; 0s turns compaction off).
    #[arg(long, default_value_t = humantime::Duration::from(COMPACTION_INTERVAL_DEFAULT))]
    compaction_interval: humantime::Duration,
    /// How long Events are kept, as kube-apiserver's --event-ttl (e.g. 1h; 0s keeps them
    /// forever). They are written on an etcd lease and vanish when it expires.
    #[arg(long, default_value_t = humantime::Duration::from(EVENT_TTL_DEFAULT))]
    event_ttl: humantime::Duration,
}

/// Runs `mnemo apiserver ...` (`args` starts after the binary name).
pub fn main(args: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    let flags = ApiserverFlags::parse_from(args);
    mnemo::logging::init(
        mnemo::logging::LogFormat::Text,
        mnemo::logging::LogLevel::Info,
        "apiserver",
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("mnemo apiserver: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(flags))
}

async fn run(flags: ApiserverFlags) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(&flags.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("mnemo apiserver: cannot listen on {}: {err}", flags.listen);
            return ExitCode::FAILURE;
        }
    };
    let interval: Duration = flags.compaction_interval.into();
    let event_ttl: Duration = flags.event_ttl.into();
    if event_ttl > EVENT_TTL_MAX {
        eprintln!(
            "mnemo apiserver: --event-ttl={} is longer than the longest lease etcd grants ({})",
            flags.event_ttl,
            humantime::Duration::from(EVENT_TTL_MAX)
        );
        return ExitCode::FAILURE;
    }
    let options = Options {
        compaction_interval: Some(interval).filter(|i| !i.is_zero()),
        event_ttl: Some(event_ttl).filter(|ttl| !ttl.is_zero()),
    };
    match &flags.etcd_endpoints {
        Some(endpoints) => match connect_any(endpoints, &flags).await {
            Ok(client) => serve(client, listener, options).await,
            Err(err) => {
                eprintln!("mnemo apiserver: cannot use --etcd-endpoints={endpoints}: {err}");
                ExitCode::FAILURE
            }
        },
        None => {
            let config = match embedded_config(&flags) {
                Ok(config) => config,
                Err(message) => {
                    eprintln!("mnemo apiserver: {message}");
                    return ExitCode::from(2);
                }
            };
            let node = match Node::start(config).await {
                Ok(node) => node,
                Err(err) => {
                    eprintln!("mnemo apiserver: {err}");
                    return ExitCode::FAILURE;
                }
            };
            let code = serve(node.client(), listener, options).await;
            node.shutdown().await;
            code
        }
    }
}

fn embedded_config(flags: &ApiserverFlags) -> Result<Config, String> {
    let client_urls =
        parse_urls("--listen-client-urls", &flags.listen_client_urls).map_err(|e| e.to_string())?;
    let peer_urls =
        parse_urls("--listen-peer-urls", &flags.listen_peer_urls).map_err(|e| e.to_string())?;
    Ok(Config {
        data_dir: flags.data_dir.clone(),
        advertise_client_urls: client_urls.clone(),
        listen_client_urls: client_urls,
        initial_advertise_peer_urls: peer_urls.clone(),
        listen_peer_urls: peer_urls,
        ..Config::default()
    })
}

/// A client balanced over every endpoint in `endpoints` (comma-separated), as kube-apiserver's
/// etcd client is: calls skip a member that is down. Fails when none can be reached.
async fn connect_any(endpoints: &str, flags: &ApiserverFlags) -> Result<GrpcClient, ClientError> {
    let endpoints: Vec<String> = endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    let tls = match (
        &flags.etcd_cafile,
        &flags.etcd_certfile,
        &flags.etcd_keyfile,
    ) {
        (None, None, None) => None,
        (None, _, _) => {
            return Err(ClientError::Transport(
                "--etcd-certfile and --etcd-keyfile need --etcd-cafile, the CA to verify the \
                 members with"
                    .into(),
            ));
        }
        (Some(ca), cert, key) => {
            let identity = cert.as_deref().zip(key.as_deref());
            let tls = ClientTls::from_files(ca, identity)
                .map_err(|err| ClientError::Transport(err.to_string()))?;
            Some(tls)
        }
    };
    GrpcClient::connect_all(&endpoints, tls.as_ref()).await
}

async fn serve<C: KvClient + Clone + 'static>(
    client: C,
    listener: tokio::net::TcpListener,
    options: Options,
) -> ExitCode {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(apiserver::serve(client, listener, options, async move {
        let _ = stopped.await;
    }));
    tokio::pin!(server);
    let served = tokio::select! {
        served = &mut server => served,
        () = crate::wait_for_signal() => {
            let _ = stop.send(());
            // Open watches would hold a graceful shutdown for their whole timeout.
            match tokio::time::timeout(SHUTDOWN_DRAIN, &mut server).await {
                Ok(served) => served,
                Err(_) => return ExitCode::SUCCESS,
            }
        }
    };
    match served {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            eprintln!("mnemo apiserver: {err}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("mnemo apiserver: {err}");
            ExitCode::FAILURE
        }
    }
}
