//! The `mnemo` binary: one member, configured with etcd's flag names (and `MNEMO_*`
//! environment variables in place of `ETCD_*`).

mod apiserver_cli;
mod scheduler_cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use mnemo::embed::{ClusterState, Config, Node, parse_urls};
use mnemo::limits::{
    ELECTION_TIMEOUT_DEFAULT, ETCD_COMPAT_VERSION, HEARTBEAT_INTERVAL_DEFAULT,
    LEASE_CHECKPOINT_INTERVAL_DEFAULT, QUOTA_BACKEND_BYTES_DEFAULT, QUOTA_BACKEND_BYTES_DISABLED,
    SNAPSHOT_COUNT_DEFAULT, WARNING_APPLY_DURATION_DEFAULT,
};
use mnemo::logging;
use mnemo::server::compactor::AutoCompaction;
use mnemo::tls::TlsInfo;

// Allocation is on every request's path (messages, buffers, log entries, futures); glibc's
// allocator spent about 10% of a loaded member's CPU. mimalloc is built without its
// transparent-huge-page advice (feature `no_thp`): with it, a member holding 100k keys was
// resident at 160 MiB instead of 135. The library leaves the choice to the program that
// embeds it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A Raft-replicated MVCC key-value store that speaks etcd's v3 API.
#[derive(Parser, Debug)]
#[command(
    name = "mnemo",
    version = concat!(env!("CARGO_PKG_VERSION"), " (etcd API ", "3.6", ")"),
    after_help = "Snapshot files (from `etcdctl snapshot save`): mnemo snapshot status|restore --help\n\
                  Kubernetes-style API server: mnemo apiserver --help\n\
                  Pod scheduler for it: mnemo scheduler --help"
)]
struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "MNEMO_NAME", default_value = "default")]
    name: String,
    /// Path to the data directory [default: <name>.mnemo].
    #[arg(long, env = "MNEMO_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(
        long,
        env = "MNEMO_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    listen_client_urls: String,
    /// Client URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "MNEMO_ADVERTISE_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    advertise_client_urls: String,
    /// URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "MNEMO_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    listen_peer_urls: String,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "MNEMO_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping (name=peer-url,...).
    #[arg(long, env = "MNEMO_INITIAL_CLUSTER", default_value = "")]
    initial_cluster: String,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "MNEMO_INITIAL_CLUSTER_STATE", value_enum, default_value_t = StateFlag::New)]
    initial_cluster_state: StateFlag,
    /// Initial cluster token for the cluster during bootstrap.
    #[arg(
        long,
        env = "MNEMO_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "MNEMO_HEARTBEAT_INTERVAL", default_value_t = HEARTBEAT_INTERVAL_DEFAULT.as_millis() as u64)]
    heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "MNEMO_ELECTION_TIMEOUT", default_value_t = ELECTION_TIMEOUT_DEFAULT.as_millis() as u64)]
    election_timeout: u64,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "MNEMO_SNAPSHOT_COUNT", default_value_t = SNAPSHOT_COUNT_DEFAULT)]
    snapshot_count: u64,
    /// Raise alarms when backend size exceeds the given quota (0 defaults to low space quota,
    /// a negative value disables the quota).
    #[arg(
        long,
        env = "MNEMO_QUOTA_BACKEND_BYTES",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    quota_backend_bytes: i64,
    /// Duration of periodic watch progress notifications (e.g. 10m, 500ms).
    #[arg(
        long,
        alias = "watch-progress-notify-interval",
        env = "MNEMO_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m",
        value_parser = humantime::parse_duration
    )]
    experimental_watch_progress_notify_interval: Duration,
    /// Auth token type: 'simple' (per-member random tokens) or
    /// 'jwt,sign-method=M,pub-key=FILE,priv-key=FILE,ttl=D' (signed tokens).
    #[arg(long, env = "MNEMO_AUTH_TOKEN", default_value = "simple")]
    auth_token: String,
    /// Seconds a simple auth token stays valid after its last use.
    #[arg(long, env = "MNEMO_AUTH_TOKEN_TTL", default_value_t = 300)]
    auth_token_ttl: u64,
    /// bcrypt cost of password hashes (4 to 31).
    #[arg(long, env = "MNEMO_BCRYPT_COST", default_value_t = 10)]
    bcrypt_cost: u32,
    /// Interpret 'auto-compaction-retention' as a duration ('periodic') or a number of
    /// revisions ('revision').
    #[arg(long, env = "MNEMO_AUTO_COMPACTION_MODE", default_value = "periodic")]
    auto_compaction_mode: String,
    /// History to keep when auto-compacting: a duration for 'periodic' (a bare number means
    /// hours, e.g. 1, 30m, 5s), a number of revisions for 'revision'. 0 means off.
    #[arg(long, env = "MNEMO_AUTO_COMPACTION_RETENTION", default_value = "0")]
    auto_compaction_retention: String,
    /// Compare this member's data with its peers' before serving clients, and refuse to start
    /// when they differ.
    #[arg(
        long,
        env = "MNEMO_EXPERIMENTAL_INITIAL_CORRUPT_CHECK",
        num_args = 0..=1,
        default_missing_value = "true",
        default_value = "false",
        action = clap::ArgAction::Set
    )]
    experimental_initial_corrupt_check: bool,
    /// How often the leader compares every member's data (0s: never); a member that differs
    /// raises the CORRUPT alarm.
    #[arg(
        long,
        env = "MNEMO_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        default_value = "0s",
        value_parser = humantime::parse_duration
    )]
    experimental_corrupt_check_time: Duration,
    /// Path to the client server TLS cert file.
    #[arg(long, env = "MNEMO_CERT_FILE")]
    cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "MNEMO_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "MNEMO_TRUSTED_CA_FILE")]
    trusted_ca_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, env = "MNEMO_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true",
          default_value_t = false, action = clap::ArgAction::Set)]
    client_cert_auth: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "MNEMO_PEER_CERT_FILE")]
    peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "MNEMO_PEER_KEY_FILE")]
    peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "MNEMO_PEER_TRUSTED_CA_FILE")]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long, env = "MNEMO_PEER_CLIENT_CERT_AUTH", num_args = 0..=1,
          default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    peer_client_cert_auth: bool,
    /// Log level: debug, info, warn, error.
    #[arg(long, env = "MNEMO_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,
    /// Log format: text (one readable line per event) or json (one JSON object per line).
    #[arg(long, env = "MNEMO_LOG_FORMAT", value_enum, default_value_t = LogFormatFlag::Text)]
    log_format: LogFormatFlag,
    /// URLs to serve /metrics and /health on over plain HTTP (besides the client URLs).
    #[arg(long, env = "MNEMO_LISTEN_METRICS_URLS", default_value = "")]
    listen_metrics_urls: String,
    /// Time after which a request logs a "took longer than the warning threshold" warning
    /// (e.g. 100ms, 1s).
    #[arg(
        long,
        env = "MNEMO_EXPERIMENTAL_WARNING_APPLY_DURATION",
        default_value_t = humantime::Duration::from(WARNING_APPLY_DURATION_DEFAULT)
    )]
    experimental_warning_apply_duration: humantime::Duration,
    /// Checkpoint long leases' remaining TTLs through Raft, so that a new leader does not
    /// restart them at their full TTL.
    #[arg(
        long,
        env = "MNEMO_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT",
        num_args = 0..=1,
        default_missing_value = "true",
        default_value = "false",
        action = clap::ArgAction::Set
    )]
    experimental_enable_lease_checkpoint: bool,
    /// How often a lease is checkpointed when lease checkpointing is on (e.g. 5m, 10s).
    #[arg(
        long,
        env = "MNEMO_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL",
        default_value_t = humantime::Duration::from(LEASE_CHECKPOINT_INTERVAL_DEFAULT)
    )]
    experimental_lease_checkpoint_interval: humantime::Duration,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormatFlag {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StateFlag {
    New,
    Existing,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl Flags {
    fn into_config(self) -> Result<Config, String> {
        // etcd's meanings: 0 is the default quota, a negative number turns the quota off.
        let quota = match u64::try_from(self.quota_backend_bytes) {
            Ok(0) => QUOTA_BACKEND_BYTES_DEFAULT,
            Ok(bytes) => bytes,
            Err(_) => QUOTA_BACKEND_BYTES_DISABLED,
        };
        let auth_token = mnemo::auth::token::TokenKind::parse(&self.auth_token)?;
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(format!(
                "--bcrypt-cost {} is out of range: valid values are 4 to 31",
                self.bcrypt_cost
            ));
        }
        Ok(Config {
            auth_token,
            auth_token_ttl: Duration::from_secs(self.auth_token_ttl),
            bcrypt_cost: self.bcrypt_cost,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(format!("{}.mnemo", self.name))),
            name: self.name,
            listen_client_urls: parse_urls("--listen-client-urls", &self.listen_client_urls)
                .map_err(|e| e.to_string())?,
            advertise_client_urls: parse_urls(
                "--advertise-client-urls",
                &self.advertise_client_urls,
            )
            .map_err(|e| e.to_string())?,
            listen_peer_urls: parse_urls("--listen-peer-urls", &self.listen_peer_urls)
                .map_err(|e| e.to_string())?,
            initial_advertise_peer_urls: parse_urls(
                "--initial-advertise-peer-urls",
                &self.initial_advertise_peer_urls,
            )
            .map_err(|e| e.to_string())?,
            initial_cluster: self.initial_cluster,
            initial_cluster_state: match self.initial_cluster_state {
                StateFlag::New => ClusterState::New,
                StateFlag::Existing => ClusterState::Existing,
            },
            initial_cluster_token: self.initial_cluster_token,
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval),
            election_timeout: Duration::from_millis(self.election_timeout),
            snapshot_count: self.snapshot_count,
            quota_backend_bytes: quota,
            watch_progress_notify_interval: self.experimental_watch_progress_notify_interval,
            initial_corrupt_check: self.experimental_initial_corrupt_check,
            corrupt_check_interval: Some(self.experimental_corrupt_check_time)
                .filter(|interval| !interval.is_zero()),
            listen_metrics_urls: if self.listen_metrics_urls.trim().is_empty() {
                Vec::new()
            } else {
                parse_urls("--listen-metrics-urls", &self.listen_metrics_urls)
                    .map_err(|e| e.to_string())?
            },
            warning_apply_duration: self.experimental_warning_apply_duration.into(),
            lease_checkpoint_interval: self
                .experimental_enable_lease_checkpoint
                .then(|| self.experimental_lease_checkpoint_interval.into()),
            auto_compaction: AutoCompaction::parse(
                &self.auto_compaction_mode,
                &self.auto_compaction_retention,
            )
            .map_err(|e| e.to_string())?,
            client_tls: TlsInfo {
                cert_file: self.cert_file,
                key_file: self.key_file,
                trusted_ca_file: self.trusted_ca_file,
                client_cert_auth: self.client_cert_auth,
            },
            peer_tls: TlsInfo {
                cert_file: self.peer_cert_file,
                key_file: self.peer_key_file,
                trusted_ca_file: self.peer_trusted_ca_file,
                client_cert_auth: self.peer_client_cert_auth,
            },
        })
    }
}

/// Offline snapshot commands (etcdutl's, with its flags and defaults).
#[derive(Parser, Debug)]
#[command(bin_name = "mnemo snapshot")]
struct SnapshotFlags {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(clap::Subcommand, Debug)]
enum SnapshotCommand {
    /// Prints the hash, revision, total keys and total size of a snapshot file.
    Status {
        /// The snapshot file (as written by `etcdctl snapshot save` against mnemo).
        file: PathBuf,
        /// Output format: simple, table or json.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = WriteOut::Simple)]
        write_out: WriteOut,
    },
    /// Builds the data dir of a member of a new cluster from a snapshot file.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// Path to the data directory to create [default: <name>.mnemo].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Human-readable name for this member.
        #[arg(long, default_value = "default")]
        name: String,
        /// Initial cluster configuration for the restored cluster (name=peer-url,...).
        #[arg(long, default_value = "")]
        initial_cluster: String,
        /// Initial cluster token for the restored cluster.
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// This member's peer URLs to advertise to the rest of the cluster.
        #[arg(long, default_value = "http://127.0.0.1:2380")]
        initial_advertise_peer_urls: String,
        /// Do not check the SHA-256 trailer, and accept a file without one.
        #[arg(long)]
        skip_hash_check: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum WriteOut {
    Simple,
    Table,
    Json,
}

/// Runs `mnemo snapshot ...` (everything after the binary name is in `args`).
fn snapshot_main(args: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    use mnemo::embed::restore::{RestoreOptions, restore};
    use mnemo::snapshot::{StatusFormat, status_of_file};
    let flags = SnapshotFlags::parse_from(args);
    let outcome = match flags.command {
        SnapshotCommand::Status { file, write_out } => status_of_file(&file)
            .map(|status| {
                let format = match write_out {
                    WriteOut::Simple => StatusFormat::Simple,
                    WriteOut::Table => StatusFormat::Table,
                    WriteOut::Json => StatusFormat::Json,
                };
                print!("{}", status.render(format));
            })
            .map_err(|err| format!("snapshot {}: {err}", file.display())),
        SnapshotCommand::Restore {
            file,
            data_dir,
            name,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
            skip_hash_check,
        } => parse_urls(
            "--initial-advertise-peer-urls",
            &initial_advertise_peer_urls,
        )
        .map_err(|err| err.to_string())
        .and_then(|advertised| {
            let config = Config {
                data_dir: data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.mnemo"))),
                name,
                initial_cluster,
                initial_cluster_token,
                initial_advertise_peer_urls: advertised,
                ..Config::default()
            };
            let options = RestoreOptions {
                snapshot: file.clone(),
                config,
                skip_hash_check,
            };
            restore(&options).map_err(|err| err.to_string())
        })
        .map(|restored| {
            println!(
                "restored snapshot {} into {}: member {:x} of new cluster {:x}, revision {}, \
                     compact revision {}, {} records",
                file.display(),
                restored.data_dir.display(),
                restored.member_id,
                restored.cluster_id,
                restored.revision,
                restored.compact_revision,
                restored.record_count
            );
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // etcdutl's shape, so scripts written for it read ours the same way.
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(flags: &Flags) {
    let level = match flags.log_level {
        LogLevel::Debug => logging::LogLevel::Debug,
        LogLevel::Info => logging::LogLevel::Info,
        LogLevel::Warn => logging::LogLevel::Warn,
        LogLevel::Error => logging::LogLevel::Error,
    };
    let format = match flags.log_format {
        LogFormatFlag::Text => logging::LogFormat::Text,
        LogFormatFlag::Json => logging::LogFormat::Json,
    };
    logging::init(format, level, &flags.name);
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(err) => {
                    tracing::warn!(%err, "cannot watch SIGTERM; only SIGINT stops the member");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => tracing::info!("received SIGINT, shutting down"),
            _ = terminate.recv() => tracing::info!("received SIGTERM, shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "snapshot")
    {
        return snapshot_main(std::env::args_os().skip(1));
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "scheduler")
    {
        return scheduler_cli::main(std::env::args_os().skip(1));
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "apiserver")
    {
        return apiserver_cli::main(std::env::args_os().skip(1));
    }
    let flags = Flags::parse();
    init_logging(&flags);
    let config = match flags.into_config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("mnemo: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("mnemo: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        tracing::info!(
            etcd_api = ETCD_COMPAT_VERSION,
            version = env!("CARGO_PKG_VERSION"),
            "mnemo starting"
        );
        let node = match Node::start(config).await {
            Ok(node) => node,
            Err(err) => {
                eprintln!("mnemo: {err}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!("ready to serve client requests");
        let removed = tokio::select! {
            () = wait_for_signal() => None,
            reason = node.removed() => Some(reason),
        };
        node.shutdown().await;
        match removed {
            None => ExitCode::SUCCESS,
            Some(reason) => {
                eprintln!(
                    "mnemo: this member has been removed from the cluster ({reason}); exiting"
                );
                ExitCode::FAILURE
            }
        }
    })
}
