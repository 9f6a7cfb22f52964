//! Member configuration with etcd's option names, defaults and checks.
//!
//! Owns parsing and validation of what a member is told at start; it must not start anything.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::limits::{
    ELECTION_TIMEOUT_DEFAULT, ELECTION_TIMEOUT_MAX, HEARTBEAT_INTERVAL_DEFAULT,
    LEASE_CHECKPOINT_INTERVAL_MIN, QUOTA_BACKEND_BYTES_DEFAULT, SNAPSHOT_COUNT_DEFAULT,
    WARNING_APPLY_DURATION_DEFAULT, WATCH_PROGRESS_NOTIFY_INTERVAL_DEFAULT,
    WATCH_PROGRESS_NOTIFY_INTERVAL_MIN,
};
use crate::server::compactor::AutoCompaction;
use crate::tls::TlsInfo;

/// Default client URL, as etcd's (on the loopback address).
pub const DEFAULT_CLIENT_URL: &str = "http://127.0.0.1:2379";
/// Default peer URL, as etcd's (on the loopback address).
pub const DEFAULT_PEER_URL: &str = "http://127.0.0.1:2380";
/// Default member name.
pub const DEFAULT_NAME: &str = "default";
/// Default cluster token.
pub const DEFAULT_CLUSTER_TOKEN: &str = "etcd-cluster";

/// Whether the member founds a new cluster or joins an existing one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClusterState {
    /// Found a new cluster with `initial_cluster` as its members.
    #[default]
    New,
    /// Join a cluster that already runs.
    Existing,
}

/// A configuration mistake, with etcd's wording where etcd has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A URL that cannot be parsed or used.
    #[error("invalid URL {url:?} in {flag}: {reason}")]
    InvalidUrl {
        /// The flag it came from.
        flag: &'static str,
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A flag with no URL.
    #[error("{flag} must name at least one URL")]
    NoUrl {
        /// The flag.
        flag: &'static str,
    },
    /// Election timeout too short for the heartbeat.
    #[error(
        "--election-timeout[{election_ms}] should be at least as 5 times as --heartbeat-interval[{heartbeat_ms}]"
    )]
    ElectionTooShort {
        /// Election timeout in ms.
        election_ms: u128,
        /// Heartbeat interval in ms.
        heartbeat_ms: u128,
    },
    /// Election timeout above the maximum.
    #[error(
        "--election-timeout[{election_ms}] is too long, and should be set less than {max_ms} milliseconds"
    )]
    ElectionTooLong {
        /// Election timeout in ms.
        election_ms: u128,
        /// The maximum in ms.
        max_ms: u128,
    },
    /// A zero heartbeat interval.
    #[error("--heartbeat-interval must be greater than 0")]
    ZeroHeartbeat,
    /// A malformed `--initial-cluster`.
    #[error("--initial-cluster {value:?}: {reason}")]
    InitialCluster {
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// This member is missing from `--initial-cluster`.
    #[error("couldn't find local name {name:?} in the initial cluster configuration")]
    NameNotInCluster {
        /// The member name.
        name: String,
    },
    /// This member's peer URLs differ between the flags.
    #[error(
        "--initial-cluster has {cluster:?} for {name:?} but --initial-advertise-peer-urls has {advertised:?}"
    )]
    PeerUrlMismatch {
        /// Member name.
        name: String,
        /// URLs in `--initial-cluster`.
        cluster: Vec<String>,
        /// URLs in `--initial-advertise-peer-urls`.
        advertised: Vec<String>,
    },
    /// `--snapshot-count` of zero.
    #[error("--snapshot-count must be greater than 0")]
    ZeroSnapshotCount,
    /// An https client URL without the client port's certificate and key.
    #[error(
        "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
    )]
    ClientTlsMissing {
        /// The URL.
        url: String,
    },
    /// An https peer URL without the peer port's certificate and key.
    #[error("cannot listen on TLS for {address}: KeyFile and CertFile are not presented")]
    PeerTlsMissing {
        /// The `host:port` of the URL.
        address: String,
    },
    /// Only one of a certificate and its key.
    #[error("KeyFile and CertFile must both be present[key: {key}, cert: {cert}]")]
    CertKeyPair {
        /// The key file given, or empty.
        key: String,
        /// The certificate file given, or empty.
        cert: String,
    },
    /// Certificate authentication asked for without a CA to verify certificates against.
    /// etcd-compat: etcd falls back to the system's roots; mnemo never trusts them.
    #[error("{auth_flag} needs {ca_flag}: certificates are verified against it only")]
    TrustedCaMissing {
        /// `--client-cert-auth` or `--peer-client-cert-auth`.
        auth_flag: &'static str,
        /// `--trusted-ca-file` or `--peer-trusted-ca-file`.
        ca_flag: &'static str,
    },
    /// An https peer URL to dial without a CA to verify the peer's certificate against.
    /// etcd-compat: etcd falls back to the system's roots; mnemo never trusts them.
    #[error("--peer-trusted-ca-file must be given to verify the https peer URL {url}")]
    PeerCaMissing {
        /// The URL.
        url: String,
    },
    /// A progress notification interval below the minimum.
    #[error(
        "--experimental-watch-progress-notify-interval must be at least {min_ms} ms, got {got_ms} ms"
    )]
    ProgressNotifyTooShort {
        /// The interval given, in milliseconds.
        got_ms: u128,
        /// The minimum, in milliseconds.
        min_ms: u128,
    },
    /// A lease checkpoint interval below the minimum.
    #[error(
        "--experimental-lease-checkpoint-interval must be at least {min_ms} ms, got {got_ms} ms"
    )]
    LeaseCheckpointTooOften {
        /// The interval given, in milliseconds.
        got_ms: u128,
        /// The minimum, in milliseconds.
        min_ms: u128,
    },
}

/// How to run one member. Field names follow etcd's flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--name`.
    pub name: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--listen-client-urls`.
    pub listen_client_urls: Vec<Url>,
    /// `--advertise-client-urls`.
    pub advertise_client_urls: Vec<Url>,
    /// `--listen-peer-urls`.
    pub listen_peer_urls: Vec<Url>,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: Vec<Url>,
    /// `--initial-cluster` (`name=url,...`); empty means this member alone.
    pub initial_cluster: String,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--heartbeat-interval`.
    pub heartbeat_interval: Duration,
    /// `--election-timeout`.
    pub election_timeout: Duration,
    /// `--snapshot-count`.
    pub snapshot_count: u64,
    /// `--quota-backend-bytes`: the backend size at which writes that need space are refused
    /// and the NOSPACE alarm is raised ([`crate::limits::QUOTA_BACKEND_BYTES_DISABLED`]: never).
    pub quota_backend_bytes: u64,
    /// `--experimental-watch-progress-notify-interval`: how often idle watchers that asked
    /// for it get a progress notification.
    pub watch_progress_notify_interval: Duration,
    /// `--auto-compaction-mode` and `--auto-compaction-retention`.
    pub auto_compaction: AutoCompaction,
    /// `--experimental-initial-corrupt-check`: compare this member's hash with its peers'
    /// before serving, and refuse to start on a mismatch.
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time`: how often the leader compares every member's hash
    /// (`None`: never, etcd's default).
    pub corrupt_check_interval: Option<Duration>,
    /// `--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`: TLS of the
    /// `https://` client URLs (ignored, with a warning, when every client URL is `http://`).
    pub client_tls: TlsInfo,
    /// `--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file`,
    /// `--peer-client-cert-auth`: TLS of the `https://` peer URLs, both served and dialed.
    pub peer_tls: TlsInfo,
    /// `--listen-metrics-urls`: extra plain-HTTP listeners serving `/metrics` and `/health`
    /// (empty: none; the client port serves both anyway).
    pub listen_metrics_urls: Vec<Url>,
    /// `--experimental-warning-apply-duration`: a KV request slower than this is logged.
    pub warning_apply_duration: Duration,
    /// `--experimental-enable-lease-checkpoint` with `--experimental-lease-checkpoint-interval`:
    /// how often the leader checkpoints long leases' remaining TTLs, so a failover does not
    /// restart them at their full TTL (`None`: never, etcd's default).
    pub lease_checkpoint_interval: Option<Duration>,
    /// `--auth-token`: simple tokens, or JWTs with their keys.
    pub auth_token: crate::auth::token::TokenKind,
    /// `--auth-token-ttl`: how long a simple token lives after its last use.
    pub auth_token_ttl: Duration,
    /// `--bcrypt-cost`: bcrypt cost of new password hashes.
    pub bcrypt_cost: u32,
}

impl Default for Config {
    fn default() -> Config {
        let url = |text: &str| Url::parse(text).expect("default URLs parse");
        Config {
            name: DEFAULT_NAME.to_string(),
            data_dir: PathBuf::from(format!("{DEFAULT_NAME}.mnemo")),
            listen_client_urls: vec![url(DEFAULT_CLIENT_URL)],
            advertise_client_urls: vec![url(DEFAULT_CLIENT_URL)],
            listen_peer_urls: vec![url(DEFAULT_PEER_URL)],
            initial_advertise_peer_urls: vec![url(DEFAULT_PEER_URL)],
            initial_cluster: String::new(),
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: DEFAULT_CLUSTER_TOKEN.to_string(),
            heartbeat_interval: HEARTBEAT_INTERVAL_DEFAULT,
            election_timeout: ELECTION_TIMEOUT_DEFAULT,
            snapshot_count: SNAPSHOT_COUNT_DEFAULT,
            quota_backend_bytes: QUOTA_BACKEND_BYTES_DEFAULT,
            watch_progress_notify_interval: WATCH_PROGRESS_NOTIFY_INTERVAL_DEFAULT,
            auto_compaction: AutoCompaction::Off,
            initial_corrupt_check: false,
            corrupt_check_interval: None,
            client_tls: TlsInfo::default(),
            peer_tls: TlsInfo::default(),
            listen_metrics_urls: Vec::new(),
            warning_apply_duration: WARNING_APPLY_DURATION_DEFAULT,
            lease_checkpoint_interval: None,
            auth_token: crate::auth::token::TokenKind::Simple,
            auth_token_ttl: crate::limits::AUTH_TOKEN_TTL_DEFAULT,
            bcrypt_cost: crate::limits::AUTH_BCRYPT_COST,
        }
    }
}

/// Parses a comma-separated URL list for `flag`.
///
/// # Errors
/// [`ConfigError::InvalidUrl`] or [`ConfigError::NoUrl`].
pub fn parse_urls(flag: &'static str, text: &str) -> Result<Vec<Url>, ConfigError> {
    let urls = text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| check_url(flag, part))
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Err(ConfigError::NoUrl { flag });
    }
    Ok(urls)
}

fn check_url(flag: &'static str, text: &str) -> Result<Url, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidUrl {
        flag,
        url: text.to_string(),
        reason,
    };
    let url = Url::parse(text).map_err(|err| invalid(err.to_string()))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(invalid(format!(
                "URL scheme must be http or https, not {other}"
            )));
        }
    }
    if url.host_str().is_none() || url.port().is_none() {
        return Err(invalid("URL must have a host and a port".into()));
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(invalid("URL must not have a path".into()));
    }
    Ok(url)
}

/// The socket address to listen on for `url`.
///
/// # Errors
/// [`ConfigError::InvalidUrl`] when the host does not resolve.
pub fn socket_addr(url: &Url) -> Result<SocketAddr, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidUrl {
        flag: "listen URL",
        url: url.to_string(),
        reason,
    };
    let host = url.host_str().ok_or_else(|| invalid("no host".into()))?;
    let port = url.port().ok_or_else(|| invalid("no port".into()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map_err(|err| invalid(err.to_string()))?
        .next()
        .ok_or_else(|| invalid("host does not resolve".into()))
}

/// A URL as etcd prints it: no trailing slash.
pub fn url_text(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

impl Config {
    /// Checks the configuration as etcd does at start.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::ZeroHeartbeat);
        }
        let election_ms = self.election_timeout.as_millis();
        let heartbeat_ms = self.heartbeat_interval.as_millis();
        if election_ms < 5 * heartbeat_ms {
            return Err(ConfigError::ElectionTooShort {
                election_ms,
                heartbeat_ms,
            });
        }
        if self.election_timeout > ELECTION_TIMEOUT_MAX {
            return Err(ConfigError::ElectionTooLong {
                election_ms,
                max_ms: ELECTION_TIMEOUT_MAX.as_millis(),
            });
        }
        if self.snapshot_count == 0 {
            return Err(ConfigError::ZeroSnapshotCount);
        }
        if self.watch_progress_notify_interval < WATCH_PROGRESS_NOTIFY_INTERVAL_MIN {
            return Err(ConfigError::ProgressNotifyTooShort {
                got_ms: self.watch_progress_notify_interval.as_millis(),
                min_ms: WATCH_PROGRESS_NOTIFY_INTERVAL_MIN.as_millis(),
            });
        }
        if let Some(interval) = self.lease_checkpoint_interval
            && interval < LEASE_CHECKPOINT_INTERVAL_MIN
        {
            return Err(ConfigError::LeaseCheckpointTooOften {
                got_ms: interval.as_millis(),
                min_ms: LEASE_CHECKPOINT_INTERVAL_MIN.as_millis(),
            });
        }
        for (flag, urls) in [
            ("--listen-client-urls", &self.listen_client_urls),
            ("--advertise-client-urls", &self.advertise_client_urls),
            ("--listen-peer-urls", &self.listen_peer_urls),
            (
                "--initial-advertise-peer-urls",
                &self.initial_advertise_peer_urls,
            ),
        ] {
            if urls.is_empty() {
                return Err(ConfigError::NoUrl { flag });
            }
            for url in urls {
                check_url(flag, url.as_str())?;
            }
        }
        self.validate_tls()?;
        for url in &self.listen_metrics_urls {
            check_url("--listen-metrics-urls", url.as_str())?;
        }
        let cluster = self.initial_cluster_members()?;
        let Some((_, mine)) = cluster.iter().find(|(name, _)| name == &self.name) else {
            return Err(ConfigError::NameNotInCluster {
                name: self.name.clone(),
            });
        };
        let mut cluster_urls = mine.clone();
        let mut advertised: Vec<String> = self
            .initial_advertise_peer_urls
            .iter()
            .map(url_text)
            .collect();
        cluster_urls.sort();
        advertised.sort();
        if cluster_urls != advertised {
            return Err(ConfigError::PeerUrlMismatch {
                name: self.name.clone(),
                cluster: cluster_urls,
                advertised,
            });
        }
        Ok(())
    }

    /// Checks that every `https://` URL has what TLS needs, as etcd does at start (the files
    /// themselves are read when the member starts).
    fn validate_tls(&self) -> Result<(), ConfigError> {
        for info in [&self.client_tls, &self.peer_tls] {
            if info.cert_file.is_some() != info.key_file.is_some() {
                let shown = |path: &Option<PathBuf>| {
                    path.as_ref()
                        .map(|path| path.display().to_string())
                        .unwrap_or_default()
                };
                return Err(ConfigError::CertKeyPair {
                    key: shown(&info.key_file),
                    cert: shown(&info.cert_file),
                });
            }
        }
        for (info, auth_flag, ca_flag) in [
            (&self.client_tls, "--client-cert-auth", "--trusted-ca-file"),
            (
                &self.peer_tls,
                "--peer-client-cert-auth",
                "--peer-trusted-ca-file",
            ),
        ] {
            if info.client_cert_auth && info.trusted_ca_file.is_none() {
                return Err(ConfigError::TrustedCaMissing { auth_flag, ca_flag });
            }
        }
        if self.client_tls.is_empty()
            && let Some(url) = self
                .listen_client_urls
                .iter()
                .find(|url| url.scheme() == "https")
        {
            return Err(ConfigError::ClientTlsMissing { url: url_text(url) });
        }
        if self.peer_tls.is_empty()
            && let Some(url) = self
                .listen_peer_urls
                .iter()
                .find(|url| url.scheme() == "https")
        {
            return Err(ConfigError::PeerTlsMissing {
                address: format!(
                    "{}:{}",
                    url.host_str().unwrap_or_default(),
                    url.port().unwrap_or_default()
                ),
            });
        }
        if self.peer_tls.trusted_ca_file.is_none() {
            let dialed = self
                .initial_cluster_members()?
                .into_iter()
                .flat_map(|(_, urls)| urls)
                .find(|url| crate::tls::is_https(url));
            if let Some(url) = dialed {
                return Err(ConfigError::PeerCaMissing { url });
            }
        }
        Ok(())
    }

    /// Whether any client URL is served with TLS.
    pub fn client_tls_used(&self) -> bool {
        self.listen_client_urls
            .iter()
            .any(|url| url.scheme() == "https")
    }

    /// The members of `--initial-cluster` as (name, sorted peer URLs), in name order; this
    /// member alone with its advertised peer URLs when the flag is empty.
    ///
    /// # Errors
    /// [`ConfigError::InitialCluster`] for malformed entries.
    pub fn initial_cluster_members(&self) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
        let mut members: Vec<(String, Vec<String>)> = Vec::new();
        if self.initial_cluster.trim().is_empty() {
            let urls = self
                .initial_advertise_peer_urls
                .iter()
                .map(url_text)
                .collect();
            return Ok(vec![(self.name.clone(), urls)]);
        }
        let bad = |reason: String| ConfigError::InitialCluster {
            value: self.initial_cluster.clone(),
            reason,
        };
        for part in self
            .initial_cluster
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            let (name, url) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not name=url")))?;
            let url = check_url("--initial-cluster", url).map_err(|err| bad(err.to_string()))?;
            match members.iter_mut().find(|(existing, _)| existing == name) {
                Some((_, urls)) => urls.push(url_text(&url)),
                None => members.push((name.to_string(), vec![url_text(&url)])),
            }
        }
        for (_, urls) in &mut members {
            urls.sort();
        }
        members.sort();
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(
            socket_addr(&config.listen_client_urls[0])
                .unwrap()
                .to_string(),
            "127.0.0.1:2379"
        );
        assert_eq!(config.data_dir, PathBuf::from("default.mnemo"));
    }

    #[test]
    fn election_timeout_must_cover_five_heartbeats() {
        let config = Config {
            election_timeout: Duration::from_millis(400),
            ..Config::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "--election-timeout[400] should be at least as 5 times as --heartbeat-interval[100]"
        );
    }

    #[test]
    fn member_must_be_in_initial_cluster() {
        let config = Config {
            initial_cluster: "other=http://127.0.0.1:2380".into(),
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::NameNotInCluster { .. })
        ));
    }

    #[test]
    fn bad_urls_are_refused_with_the_flag_name() {
        let error = parse_urls("--listen-client-urls", "127.0.0.1:2379").unwrap_err();
        assert!(
            error.to_string().contains("--listen-client-urls"),
            "{error}"
        );
        assert!(parse_urls("--listen-client-urls", "unixs://127.0.0.1:2379").is_err());
        assert!(parse_urls("--listen-client-urls", "https://127.0.0.1:2379").is_ok());
        assert!(parse_urls("--listen-client-urls", "").is_err());
    }

    #[test]
    fn https_urls_need_their_certificate_and_key() {
        let https = |text: &str| vec![Url::parse(text).unwrap()];
        let config = Config {
            listen_client_urls: https("https://127.0.0.1:2379"),
            ..Config::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "TLS key/cert (--cert-file, --key-file) must be provided for client url \
             https://127.0.0.1:2379 with HTTPS scheme"
        );
        let config = Config {
            listen_peer_urls: https("https://127.0.0.1:2380"),
            ..Config::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"
        );
        let config = Config {
            client_tls: TlsInfo {
                cert_file: Some("server.pem".into()),
                ..TlsInfo::default()
            },
            ..Config::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "KeyFile and CertFile must both be present[key: , cert: server.pem]"
        );
        let config = Config {
            client_tls: TlsInfo {
                client_cert_auth: true,
                ..TlsInfo::default()
            },
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::TrustedCaMissing { .. })
        ));
        let config = Config {
            initial_advertise_peer_urls: https("https://127.0.0.1:2380"),
            peer_tls: TlsInfo {
                cert_file: Some("peer.pem".into()),
                key_file: Some("peer-key.pem".into()),
                ..TlsInfo::default()
            },
            ..Config::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "--peer-trusted-ca-file must be given to verify the https peer URL https://127.0.0.1:2380"
        );
    }
}
