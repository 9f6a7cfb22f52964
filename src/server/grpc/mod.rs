//! The client port: etcd's gRPC services, their JSON gateway and the HTTP endpoints, served on
//! one listener, in plain text or behind TLS (`crate::tls::accept`; ALPN offers h2 and
//! http/1.1).
//!
//! This module owns wire compatibility (service names, message shapes, status codes, headers)
//! and nothing else: every call is converted and handed to [`Server`]. It must not hold
//! business logic or touch storage directly.

mod auth;
mod authority;
mod cluster;
mod concurrency;
pub mod gateway;
mod kv;
mod lease;
mod maintenance;
mod metered;
pub mod status;
mod watch;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use self::auth::{AuthService, CallerScope};
use self::authority::AuthorityFix;
use self::cluster::ClusterService;
use self::concurrency::{ElectionService, LockService};
use self::kv::KvService;
use self::lease::LeaseService;
use self::maintenance::MaintenanceService;
use self::watch::WatchService;
use crate::limits::GRPC_RECV_BYTES_MAX;
use crate::pb::etcdserverpb as rpc;
use crate::pb::{v3electionpb, v3lockpb};
use crate::server::{Header, Server, http};

/// Request metadata key with which a client asks to be refused while there is no leader.
const HAS_LEADER_METADATA: &str = "hasleader";

/// Converts a header to its wire form.
pub fn header_to_pb(header: Header) -> rpc::ResponseHeader {
    rpc::ResponseHeader {
        cluster_id: header.cluster_id,
        member_id: header.member_id,
        revision: header.revision,
        raft_term: header.raft_term,
    }
}

/// The common name of the verified client certificate a request came with: set only on a TLS
/// client port with a trusted CA (`--trusted-ca-file`, `--client-cert-auth`), where the
/// handshake refused any certificate not signed by it. etcd uses it as the user name when auth is enabled.
pub fn client_common_name<T>(request: &tonic::Request<T>) -> Option<String> {
    peer_common_name(request.extensions())
}

/// [`client_common_name`] from the extensions of the HTTP request, where tonic puts the
/// connection's TLS details before any layer sees it.
fn peer_common_name(extensions: &::http::Extensions) -> Option<String> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let certs = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    crate::tls::common_name(certs.first()?)
}

/// Serves gRPC (HTTP/2) and the HTTP/1.1 endpoints on `listener` until `shutdown` resolves;
/// with `tls`, every connection completes a TLS handshake first.
///
/// # Errors
/// Transport failures of the listener.
pub async fn serve(
    server: Arc<Server>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // One Auth instance serves both gRPC and the JSON gateway, so they always answer alike.
    let auth = Arc::new(AuthService::new(Arc::clone(&server)));
    let http_routes =
        http::router(Arc::clone(&server)).merge(gateway::router(&server, Arc::clone(&auth)));
    let routes = tonic::service::Routes::from(http_routes)
        .add_service(
            rpc::kv_server::KvServer::new(KvService::new(Arc::clone(&server)))
                .max_decoding_message_size(GRPC_RECV_BYTES_MAX)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            rpc::maintenance_server::MaintenanceServer::new(MaintenanceService::new(Arc::clone(
                &server,
            )))
            .max_decoding_message_size(GRPC_RECV_BYTES_MAX),
        )
        .add_service(
            rpc::cluster_server::ClusterServer::new(ClusterService::new(Arc::clone(&server)))
                .max_decoding_message_size(GRPC_RECV_BYTES_MAX),
        )
        .add_service(
            rpc::watch_server::WatchServer::new(WatchService::new(Arc::clone(&server)))
                .max_decoding_message_size(GRPC_RECV_BYTES_MAX)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            rpc::lease_server::LeaseServer::new(LeaseService::new(Arc::clone(&server)))
                .max_decoding_message_size(GRPC_RECV_BYTES_MAX),
        )
        .add_service(rpc::auth_server::AuthServer::from_arc(auth))
        .add_service(v3lockpb::lock_server::LockServer::new(LockService::new(
            &server,
        )))
        .add_service(v3electionpb::election_server::ElectionServer::new(
            ElectionService::new(&server),
        ));
    metered::register_series();
    let leader_check = Arc::clone(&server);
    let router = tonic::transport::Server::builder()
        // etcd serves HTTP/1.1 (health, version, gateway) beside gRPC on the client port.
        .accept_http1(true)
        // Outermost, so the counts see every call and the final status codes, including
        // the refusals and rewrites of the layers below.
        .layer(metered::MeteredLayer)
        // etcd-compat: a client that sent `hasleader: true` is refused at once while there is
        // no leader, instead of waiting for one.
        .layer(tonic::service::InterceptorLayer::new(
            move |request: tonic::Request<()>| {
                let wants_leader = request
                    .metadata()
                    .get(HAS_LEADER_METADATA)
                    .is_some_and(|value| value.as_bytes() == b"true");
                if wants_leader && !leader_check.has_leader() {
                    Err(status::to_status(&crate::server::Error::NoLeader))
                } else {
                    Ok(request)
                }
            },
        ))
        // Every call, gRPC or gateway, runs as the caller its token names.
        .layer(tower::layer::layer_fn(CallerScope::new))
        // Clients multiplex many watch streams over one connection.
        .max_concurrent_streams(u32::MAX)
        .layer(tower::util::MapResponseLayer::new(
            status::etcd_oversized_message,
        ))
        .add_routes(routes);
    match tls {
        None => {
            router
                .serve_with_incoming_shutdown(incoming(listener), shutdown)
                .await
        }
        Some(config) => {
            router
                .serve_with_incoming_shutdown(tls_incoming(listener, config), shutdown)
                .await
        }
    }
}

/// Accepted client connections that completed their TLS handshake, with the authority
/// repair inside TLS, where it sees the decrypted bytes.
fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl futures::Stream<
    Item = std::io::Result<AuthorityFix<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>>,
> {
    crate::tls::accept(listener, config, "client")
        .map(|handshaken| handshaken.map(AuthorityFix::new))
}

/// Accepted client connections: no Nagle delay on small responses, and etcd clients' invalid
/// `:authority` repaired before the HTTP/2 library sees it.
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<AuthorityFix<tokio::net::TcpStream>>> {
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "cannot disable Nagle on a client connection");
        }
        Ok(AuthorityFix::new(stream))
    })
}

#[cfg(test)]
mod tls_tests;
