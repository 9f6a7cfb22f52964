//! Composition of a member: works out its identity (founding a new cluster, joining a running
//! one, or restarting from its data dir), opens storage, starts consensus, serves the peer and
//! client URLs (with TLS for `https://` ones, from the certificate files read at start),
//! publishes its name and client URLs, and shuts down in order.
//!
//! Shutdown order: stop accepting and finish in-flight requests, stop Raft (which flushes the
//! log), then close the backend. A member removed from the cluster shuts itself down the same
//! way. This module must hold no logic that belongs lower down.

mod config;
mod identity;
pub mod restore;

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::config::{ClusterState, Config, ConfigError, parse_urls};
use self::identity::Identity;
use crate::apply::Applier;
use crate::client::LocalClient;
use crate::limits::{
    JOIN_TIMEOUT, LEADER_WAIT_ELECTION_TIMEOUTS, PUBLISH_RETRY_INTERVAL,
    QUOTA_BACKEND_BYTES_DISABLED, QUOTA_BACKEND_BYTES_SUGGESTED_MAX, SHUTDOWN_DRAIN,
};
use crate::raft::{RaftConfig, RaftNode};
use crate::server::{self, Server};
use crate::storage::member_db::MemberDb;
use crate::tls::{self, ClientTls};

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be used.
    #[error("data dir {path}: {reason}")]
    DataDir {
        /// The directory.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The state could not be opened.
    #[error("storage: {0}")]
    Storage(String),
    /// Consensus could not start (for example the raft log is corrupt).
    #[error("raft: {0}")]
    Raft(String),
    /// Joining an existing cluster failed.
    #[error("cannot join the cluster: {0}")]
    Join(String),
    /// The start-up corruption check found a peer that disagrees.
    #[error(transparent)]
    Corrupt(#[from] crate::server::corruption::CorruptionError),
    /// The TLS files of the client or peer port could not be used.
    #[error("{port} TLS: {source}")]
    Tls {
        /// "client" or "peer".
        port: &'static str,
        /// What is wrong with the files.
        source: crate::tls::TlsError,
    },
    /// A client or peer URL could not be listened on.
    #[error("cannot listen on {url}: {reason}")]
    Listen {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// A running member.
pub struct Node {
    server: Arc<Server>,
    client_addrs: Vec<SocketAddr>,
    peer_addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    peer_listeners: Vec<JoinHandle<()>>,
    publisher: JoinHandle<()>,
    /// Background work holding the store: the watch hub's catch-up and progress tasks and
    /// the leader's lease duties.
    background: Vec<JoinHandle<()>>,
}

/// Binds every URL in `urls`, returning the listeners and the addresses they are bound to, in
/// the order of `urls`.
async fn bind_all(urls: &[url::Url]) -> Result<Vec<(TcpListener, SocketAddr)>, NodeError> {
    let mut bound = Vec::new();
    for url in urls {
        let address = config::socket_addr(url)?;
        let listen_error = |err: std::io::Error| NodeError::Listen {
            url: url.to_string(),
            reason: err.to_string(),
        };
        let listener = TcpListener::bind(address).await.map_err(listen_error)?;
        let local = listener.local_addr().map_err(listen_error)?;
        bound.push((listener, local));
    }
    Ok(bound)
}

/// The TLS configurations of a member, read from its certificate files at start.
struct TlsSetup {
    /// The server side of the `https://` client URLs.
    client: Option<Arc<rustls::ServerConfig>>,
    /// The server side of the `https://` peer URLs.
    peer_server: Option<Arc<rustls::ServerConfig>>,
    /// How `https://` peers are dialed.
    peer_client: Option<ClientTls>,
}

impl TlsSetup {
    /// Reads the files `config` names for the ports that use them; a member whose URLs are
    /// all `http://` reads none (etcd ignores the client files then, with a warning).
    fn load(config: &Config) -> Result<TlsSetup, NodeError> {
        let client_error = |source| NodeError::Tls {
            port: "client",
            source,
        };
        let peer_error = |source| NodeError::Tls {
            port: "peer",
            source,
        };
        let client = if config.client_tls_used() {
            Some(
                tls::server_config(&config.client_tls, tls::ALPN_CLIENT_PORT)
                    .map_err(client_error)?,
            )
        } else {
            if !config.client_tls.is_empty() {
                tracing::warn!("every client URL is http; the client key/cert files are ignored");
            }
            None
        };
        let peer_server = if config
            .listen_peer_urls
            .iter()
            .any(|url| url.scheme() == "https")
        {
            Some(tls::server_config(&config.peer_tls, tls::ALPN_PEER_PORT).map_err(peer_error)?)
        } else {
            None
        };
        let peer_client = ClientTls::for_peers(&config.peer_tls).map_err(peer_error)?;
        Ok(TlsSetup {
            client,
            peer_server,
            peer_client,
        })
    }

    /// The server configuration for a listener on `url`: `None` for `http://`.
    fn for_url(
        config: Option<&Arc<rustls::ServerConfig>>,
        url: &url::Url,
    ) -> Option<Arc<rustls::ServerConfig>> {
        config.filter(|_| url.scheme() == "https").cloned()
    }
}

/// The identity of this member: stored in the data dir after the first start; derived from
/// the flags for a founding member; asked of the running members for one joining them.
async fn identity(
    member_dir: &std::path::Path,
    config: &Config,
    peer_tls: Option<&ClientTls>,
) -> Result<Identity, NodeError> {
    if let Some(stored) = Identity::load(member_dir, config)? {
        return Ok(stored);
    }
    let identity = match config.initial_cluster_state {
        ClusterState::New => Identity::for_new_cluster(config)?,
        ClusterState::Existing => {
            let mine: Vec<String> = config
                .initial_advertise_peer_urls
                .iter()
                .map(config::url_text)
                .collect();
            let others: Vec<String> = config
                .initial_cluster_members()?
                .into_iter()
                .filter(|(name, _)| name != &config.name)
                .flat_map(|(_, urls)| urls)
                .collect();
            if others.is_empty() {
                return Err(NodeError::Join(
                    "--initial-cluster names no other member to join".into(),
                ));
            }
            let (cluster_id, members) =
                crate::raft::fetch_membership(&others, &mine, peer_tls, JOIN_TIMEOUT)
                    .await
                    .map_err(NodeError::Join)?;
            Identity::for_existing_cluster(config, cluster_id, &members)?
        }
    };
    identity.save(member_dir)?;
    Ok(identity)
}

/// Announces this member's name and client URLs through the leader until it has been done,
/// as etcd publishes a started member's attributes.
async fn publish(server_ref: std::sync::Weak<Server>, name: String, client_urls: Vec<String>) {
    loop {
        let Some(server) = server_ref.upgrade() else {
            return;
        };
        let published = server.members().iter().any(|member| {
            member.id == server.current_header().member_id
                && member.name == name
                && member.client_urls == client_urls
        });
        if published {
            return;
        }
        // Until the leader has committed an entry of its term, the founding membership is
        // not committed and openraft refuses any change to it; wait instead of asking.
        let raft = Arc::clone(server.raft());
        drop(server);
        if raft
            .wait_for_first_commit(PUBLISH_RETRY_INTERVAL)
            .await
            .is_err()
        {
            continue;
        }
        let Some(server) = server_ref.upgrade() else {
            return;
        };
        match server.publish(name.clone(), client_urls.clone()).await {
            Ok(()) => {
                tracing::info!(%name, ?client_urls, "published this member's name and client URLs");
                return;
            }
            Err(err) => tracing::debug!(%err, "publishing this member's attributes; will retry"),
        }
        drop(server);
        tokio::time::sleep(PUBLISH_RETRY_INTERVAL).await;
    }
}

impl Node {
    /// Starts a member from `config`: opens (or creates) its data directory, recovers its
    /// state, starts consensus and serves the client URLs.
    ///
    /// # Errors
    /// [`NodeError`] when any step fails; nothing is left running then.
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        config.validate()?;
        let member_dir = config.data_dir.join("member");
        std::fs::create_dir_all(&member_dir).map_err(|err| NodeError::DataDir {
            path: member_dir.display().to_string(),
            reason: err.to_string(),
        })?;
        let tls_setup = TlsSetup::load(&config)?;
        // Peer URLs are bound first: a member joining a cluster must already be reachable
        // when the leader starts sending it the log.
        let peer_bound = bind_all(&config.listen_peer_urls).await?;
        let identity = identity(&member_dir, &config, tls_setup.peer_client.as_ref()).await?;
        tracing::info!(
            name = %identity.name,
            member_id = %format!("{:x}", identity.member_id),
            cluster_id = %format!("{:x}", identity.cluster_id),
            data_dir = %config.data_dir.display(),
            "starting member"
        );
        let db = MemberDb::open(&member_dir).map_err(|err| NodeError::Storage(err.to_string()))?;
        let applier =
            Arc::new(Applier::new(db).map_err(|err| NodeError::Storage(err.to_string()))?);
        let initial_members = match (&identity.bootstrap_members, config.initial_cluster_state) {
            // A restored data dir bootstraps with the membership its restore fixed.
            (Some(members), _) => members.clone(),
            (None, ClusterState::New) => Identity::initial_members(&config),
            // The leader sends a joining member the membership with the log.
            (None, ClusterState::Existing) => std::collections::BTreeMap::new(),
        };
        let raft_config = RaftConfig {
            cluster_id: identity.cluster_id,
            member_id: identity.member_id,
            wal_dir: member_dir.join("wal"),
            snap_dir: member_dir.join("snap"),
            heartbeat_interval: config.heartbeat_interval,
            election_timeout: config.election_timeout,
            snapshot_count: config.snapshot_count,
            initial_members,
            peer_tls: tls_setup.peer_client.clone(),
        };
        let raft = RaftNode::start(
            raft_config,
            applier.clone() as Arc<dyn crate::raft::StateMachineHost>,
        )
        .await
        .map_err(|err| NodeError::Raft(err.to_string()))?;
        let raft = Arc::new(raft);
        let (stop, stopped) = watch::channel(false);
        let shutdown_signal = |mut stopped: watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let mut peer_addrs = Vec::new();
        let mut peer_listeners = Vec::new();
        for ((listener, bound), url) in peer_bound.into_iter().zip(&config.listen_peer_urls) {
            tracing::info!(address = %bound, scheme = url.scheme(), "serving peer requests");
            peer_addrs.push(bound);
            let raft = Arc::clone(&raft);
            let shutdown = shutdown_signal(stopped.clone());
            let tls = TlsSetup::for_url(tls_setup.peer_server.as_ref(), url);
            peer_listeners.push(tokio::spawn(async move {
                if let Err(err) = raft.serve_peers(listener, tls, shutdown).await {
                    tracing::error!(%err, "peer listener failed");
                }
            }));
        }
        // A lone member elects itself within one election timeout; in a larger cluster the
        // member serves (with "no leader" errors) until the others are reachable.
        let leader_wait = config.election_timeout * LEADER_WAIT_ELECTION_TIMEOUTS;
        if let Err(err) = raft.wait_for_leader(leader_wait).await {
            tracing::warn!(%err, "no leader yet; serving anyway");
        }
        let server_identity = server::Identity {
            cluster_id: identity.cluster_id,
            member_id: identity.member_id,
        };
        log_quota(config.quota_backend_bytes);
        let mut background = applier.watch().spawn(config.watch_progress_notify_interval);
        let server = Arc::new(
            Server::new(
                server_identity,
                Arc::clone(&raft),
                applier,
                config.quota_backend_bytes,
            )
            .with_warning_apply_duration(config.warning_apply_duration)
            .with_lease_checkpoint_interval(config.lease_checkpoint_interval)
            .with_auth_settings(
                config.auth_token.clone(),
                config.auth_token_ttl,
                config.bcrypt_cost,
            ),
        );
        background.push(server.start_lease_duties());
        background.extend(server.start_corruption_checks(config.corrupt_check_interval));
        if config.initial_corrupt_check {
            server.check_against_peers().await?;
        }
        background.push(tokio::spawn(crate::server::compactor::run(
            Arc::downgrade(&server),
            config.auto_compaction,
        )));
        // With a leader at hand the member publishes before it serves clients, so its member
        // list is complete from the first request; otherwise it keeps trying in the background.
        let publishing = publish(
            Arc::downgrade(&server),
            config.name.clone(),
            config
                .advertise_client_urls
                .iter()
                .map(config::url_text)
                .collect(),
        );
        let mut publishing = Box::pin(publishing);
        let publisher = match tokio::time::timeout(leader_wait, &mut publishing).await {
            Ok(()) => tokio::spawn(async {}),
            Err(_) => tokio::spawn(publishing),
        };
        let mut client_addrs = Vec::new();
        let mut listeners = Vec::new();
        // Client and metrics URLs are all bound before any serves, so one that cannot be
        // listened on fails the start before a client was served.
        let client_bound = bind_all(&config.listen_client_urls).await?;
        let metrics_bound = bind_all(&config.listen_metrics_urls).await?;
        for ((listener, bound), url) in client_bound.into_iter().zip(&config.listen_client_urls) {
            tracing::info!(address = %bound, scheme = url.scheme(), "serving client requests");
            client_addrs.push(bound);
            let shutdown = shutdown_signal(stopped.clone());
            let server = Arc::clone(&server);
            let tls = TlsSetup::for_url(tls_setup.client.as_ref(), url);
            listeners.push(tokio::spawn(async move {
                if let Err(err) = server::grpc::serve(server, listener, tls, shutdown).await {
                    tracing::error!(%err, "client listener failed");
                }
            }));
        }
        for (listener, bound) in metrics_bound {
            tracing::info!(address = %bound, "serving /metrics and /health");
            let shutdown = shutdown_signal(stopped.clone());
            let router = server::http::metrics_router(Arc::clone(&server));
            listeners.push(tokio::spawn(async move {
                if let Err(err) = axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!(%err, "metrics listener failed");
                }
            }));
        }
        Ok(Node {
            server,
            client_addrs,
            peer_addrs,
            stop,
            listeners,
            peer_listeners,
            publisher,
            background,
        })
    }

    /// An in-process client that calls this member directly, without gRPC.
    pub fn client(&self) -> LocalClient {
        LocalClient::new(&self.server)
    }

    /// The addresses the client listeners are bound to (useful with port 0).
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    /// The addresses the peer listeners are bound to (useful with port 0).
    pub fn peer_addrs(&self) -> &[SocketAddr] {
        &self.peer_addrs
    }

    /// The request lifecycle of this member.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Resolves with the reason once this member learns it was removed from the cluster; the
    /// caller should then shut it down.
    pub async fn removed(&self) -> String {
        let mut removed = self.server.raft().removed();
        loop {
            if let Some(reason) = removed.borrow_and_update().clone() {
                return reason;
            }
            if removed.changed().await.is_err() {
                // The flag's owner is gone: the member is stopping anyway.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops the member in order: listeners, in-flight requests, consensus, storage.
    pub async fn shutdown(self) {
        self.publisher.abort();
        // Watch streams never end by themselves; ending them lets the listeners drain.
        self.server.watch().shut_down();
        let _ = self.stop.send(true);
        for listener in self.listeners.into_iter().chain(self.peer_listeners) {
            if tokio::time::timeout(SHUTDOWN_DRAIN, listener)
                .await
                .is_err()
            {
                tracing::warn!("a listener did not drain in time");
            }
        }
        self.server.raft().shutdown().await;
        // Awaited, not just aborted: these tasks hold the store, which must be closed (its
        // RocksDB lock released) when shutdown returns.
        for task in self.background {
            task.abort();
            let _ = task.await;
        }
        // The storage closes when the last reference to the server goes; clients hold it
        // weakly, so by now only this one should be left.
        if Arc::strong_count(&self.server) > 1 {
            tracing::warn!(
                "member storage is still referenced after shutdown; it closes when released"
            );
        }
        drop(self.server);
        tracing::info!("member stopped");
    }
}

/// Says at start what the backend quota is, and warns, as etcd does, when it is above the
/// largest quota etcd suggests (the quota is kept: the operator asked for it).
fn log_quota(quota_bytes: u64) {
    if quota_bytes == QUOTA_BACKEND_BYTES_DISABLED {
        tracing::info!("backend quota disabled");
    } else if quota_bytes > QUOTA_BACKEND_BYTES_SUGGESTED_MAX {
        tracing::warn!(
            quota_bytes,
            suggested_max_bytes = QUOTA_BACKEND_BYTES_SUGGESTED_MAX,
            "backend quota exceeds the suggested maximum; a larger database may degrade performance"
        );
    } else {
        tracing::info!(quota_bytes, "backend quota");
    }
}

#[cfg(test)]
mod tests;
