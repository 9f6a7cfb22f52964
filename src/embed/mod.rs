//! Composition of a member: opens storage, starts consensus, wires the server and listens on
//! the client URLs; shuts down in order.
//!
//! Shutdown order: stop accepting and finish in-flight requests, stop Raft (which flushes the
//! log), then close the backend. This module must hold no logic that belongs lower down.

mod config;
mod identity;

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::config::{ClusterState, Config, ConfigError, parse_urls};
use self::identity::Identity;
use crate::apply::Applier;
use crate::client::LocalClient;
use crate::limits::{LEADER_WAIT_ELECTION_TIMEOUTS, SHUTDOWN_DRAIN};
use crate::raft::{RaftConfig, RaftNode};
use crate::server::{self, Server};
use crate::storage::backend::Backend;
use crate::storage::mvcc::MvccStore;

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
    /// A client URL could not be listened on.
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
    stop: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
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
        let identity = Identity::load_or_create(&member_dir, &config)?;
        tracing::info!(
            name = %identity.name,
            member_id = %format!("{:x}", identity.member_id),
            cluster_id = %format!("{:x}", identity.cluster_id),
            data_dir = %config.data_dir.display(),
            "starting member"
        );
        let backend = Backend::open(&member_dir.join("db"))
            .map_err(|err| NodeError::Storage(err.to_string()))?;
        let store = MvccStore::open(Arc::new(backend))
            .map_err(|err| NodeError::Storage(err.to_string()))?;
        let applier = Arc::new(
            Applier::new(Arc::new(store)).map_err(|err| NodeError::Storage(err.to_string()))?,
        );
        let raft_config = RaftConfig {
            member_id: identity.member_id,
            wal_dir: member_dir.join("wal"),
            snap_dir: member_dir.join("snap"),
            heartbeat_interval: config.heartbeat_interval,
            election_timeout: config.election_timeout,
            snapshot_count: config.snapshot_count,
            initial_members: identity.initial_members(&config),
        };
        let raft = RaftNode::start(
            raft_config,
            applier.clone() as Arc<dyn crate::raft::StateMachineHost>,
        )
        .await
        .map_err(|err| NodeError::Raft(err.to_string()))?;
        let raft = Arc::new(raft);
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
        let server = Arc::new(Server::new(
            server_identity,
            Arc::clone(&raft),
            applier,
            config.quota_backend_bytes,
        ));
        let (stop, stopped) = watch::channel(false);
        let mut client_addrs = Vec::new();
        let mut listeners = Vec::new();
        for url in &config.listen_client_urls {
            let address = config::socket_addr(url)?;
            let listener = TcpListener::bind(address)
                .await
                .map_err(|err| NodeError::Listen {
                    url: url.to_string(),
                    reason: err.to_string(),
                })?;
            let bound = listener.local_addr().map_err(|err| NodeError::Listen {
                url: url.to_string(),
                reason: err.to_string(),
            })?;
            tracing::info!(address = %bound, "serving client requests");
            client_addrs.push(bound);
            let mut stopped = stopped.clone();
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            let server = Arc::clone(&server);
            listeners.push(tokio::spawn(async move {
                if let Err(err) = server::grpc::serve(server, listener, shutdown).await {
                    tracing::error!(%err, "client listener failed");
                }
            }));
        }
        Ok(Node {
            server,
            client_addrs,
            stop,
            listeners,
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

    /// The request lifecycle of this member.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Stops the member in order: listeners, in-flight requests, consensus, storage.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for listener in self.listeners {
            if tokio::time::timeout(SHUTDOWN_DRAIN, listener)
                .await
                .is_err()
            {
                tracing::warn!("a client listener did not drain in time");
            }
        }
        self.server.raft().shutdown().await;
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

#[cfg(test)]
mod tests;
