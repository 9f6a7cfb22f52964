//! `mnemo apiserver`: a thin Kubernetes-style API server over the store, enough for the real
//! kubectl 1.32: discovery, CRUD, list with selectors and paging, watch, patch, Tables, and
//! kube-apiserver's key layout and compaction (see `/work/shared/apiserver.md` for what
//! kubectl sends and expects).
//!
//! Architecture invariant: it reaches the store only through [`crate::client::KvClient`]
//! (`LocalClient` for the embedded member, `GrpcClient` for any etcd v3 cluster), so it never
//! imports server, storage or raft internals, and it runs unchanged on real etcd.
//!
//! Map: `registry` (served resources and their keys), `discovery` (documents), `handlers`
//! (routing and verbs), `store` (objects in etcd, guarded writes), `watch` (event streams),
//! `table` (server-side printing), `object` (metadata helpers), `error` (kube Status bodies),
//! `compactor`, `ttl` (the leases Events expire with), and the reaper of pods whose graceful deletion is over (`serve`); `patch`, `selector`, `validate`, `schema` (the kinds' fields, from `proto/kube`) and `protobuf`
//! (kubectl's protobuf bodies) are pure building blocks.

pub mod compactor;
mod discovery;
mod error;
mod handlers;
mod object;
pub mod patch;
mod protobuf;
pub mod registry;
mod schema;
pub mod selector;
mod store;
mod table;
mod ttl;
pub mod validate;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

pub use self::discovery::KUBE_MINOR_VERSION;
pub use self::error::ApiError;
pub use self::ttl::EVENT_TTL_MAX;
use crate::client::KvClient;

/// Attempts of one read-modify-write before a 409: each lost race means another writer
/// changed the object, so the bound only matters under a storm of writers on one object.
pub const UPDATE_ATTEMPTS_MAX: usize = 64;
/// Largest batch a list reads while selectors drop items (kube's cap for the doubling).
pub const LIST_FETCH_LIMIT_MAX: i64 = 10_000;
/// Read passes of one list page; every pass moves past at least one key, and with the
/// doubling batch this covers far more keys than any namespace holds.
pub const LIST_PASSES_MAX: usize = 64;
/// Watch lines buffered per stream before the watch waits for the client to read.
pub const WATCH_BUFFER_EVENTS: usize = 256;
/// A watch without `timeoutSeconds` ends after this long (kube picks 30 to 60 minutes);
/// clients re-watch from their last resourceVersion.
pub const WATCH_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30 * 60);
/// Longest `timeoutSeconds` honoured.
pub const WATCH_TIMEOUT_MAX: Duration = Duration::from_secs(60 * 60);
/// kube-apiserver's default `--event-ttl`: how long an Event stays in the store.
pub const EVENT_TTL_DEFAULT: Duration = Duration::from_secs(60 * 60);

/// kube-apiserver's default `--etcd-compaction-interval`.
pub const COMPACTION_INTERVAL_DEFAULT: Duration = Duration::from_secs(5 * 60);
/// How often the API server looks for pods whose graceful deletion deadline has passed.
pub const POD_REAP_INTERVAL: Duration = Duration::from_secs(1);
/// Namespaces every cluster starts with.
pub const NAMESPACES_SEEDED: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// How to run the API server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Compaction interval; None turns compaction off.
    pub compaction_interval: Option<Duration>,
    /// How long Events live; None keeps them forever.
    pub event_ttl: Option<Duration>,
}

/// The router of every API path, over `client`. `server_address` is reported in `/api`;
/// Events expire after `event_ttl` (None: never).
pub fn router<C: KvClient + Clone + 'static>(
    client: C,
    server_address: String,
    event_ttl: Option<Duration>,
) -> Router {
    let api = Arc::new(handlers::Api {
        client,
        server_address,
        ttl_leases: ttl::TtlLeases::new(event_ttl),
    });
    Router::new()
        .fallback(handlers::dispatch::<C>)
        .with_state(api)
}

/// Seeds the default namespaces, starts compaction, and serves HTTP on `listener` until
/// `shutdown` resolves.
///
/// # Errors
/// [`ApiError`] when the store cannot be reached to seed the namespaces.
pub async fn serve<C: KvClient + Clone + 'static>(
    client: C,
    listener: tokio::net::TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    handlers::seed_namespaces(&client).await?;
    let address = listener
        .local_addr()
        .map_err(|err| ApiError::Internal(err.to_string()))?;
    let compaction = options
        .compaction_interval
        .map(|interval| tokio::spawn(compactor::run(client.clone(), interval)));
    let reaper = tokio::spawn(reap_pods(client.clone()));
    let app = router(client, address.to_string(), options.event_ttl);
    // Only now: the store answered (the namespaces are seeded).
    tracing::info!(%address, "apiserver ready to serve requests");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|err| ApiError::Internal(err.to_string()));
    if let Some(task) = compaction {
        task.abort();
    }
    reaper.abort();
    served
}

/// Every [`POD_REAP_INTERVAL`], deletes the pods whose graceful deletion is over (see
/// [`handlers::reap_terminated_pods`]); a failed pass is logged and the next one tries again.
async fn reap_pods<C: KvClient>(client: C) {
    let mut ticks = tokio::time::interval(POD_REAP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = handlers::reap_terminated_pods(&client).await {
            tracing::warn!(%error, "deleting pods whose grace period is over failed");
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every source file of this module, for the dependency check.
    const SOURCES: &[(&str, &str)] = &[
        ("compactor.rs", include_str!("compactor.rs")),
        ("discovery.rs", include_str!("discovery.rs")),
        ("error.rs", include_str!("error.rs")),
        ("handlers.rs", include_str!("handlers.rs")),
        ("mod.rs", include_str!("mod.rs")),
        ("object.rs", include_str!("object.rs")),
        ("patch.rs", include_str!("patch.rs")),
        ("protobuf.rs", include_str!("protobuf.rs")),
        ("registry.rs", include_str!("registry.rs")),
        ("schema.rs", include_str!("schema.rs")),
        ("selector.rs", include_str!("selector.rs")),
        ("store.rs", include_str!("store.rs")),
        ("table.rs", include_str!("table.rs")),
        ("ttl.rs", include_str!("ttl.rs")),
        ("validate.rs", include_str!("validate.rs")),
        ("watch.rs", include_str!("watch.rs")),
    ];

    /// The module's invariant: the store is reached through `client` only (with `types` for
    /// its request values), so the API server runs on real etcd as it runs embedded.
    #[test]
    fn only_the_client_api_is_imported() {
        let allowed = ["crate::client", "crate::types", "crate::apiserver"];
        for (file, text) in SOURCES {
            // Test code may use anything; the check covers what ships.
            let shipped = text.split("#[cfg(test)]").next().unwrap_or(text);
            for (at, _) in shipped.match_indices("crate::") {
                let path: String = shipped[at..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                assert!(
                    allowed.iter().any(|prefix| path.starts_with(prefix)),
                    "{file} uses {path}: apiserver may only use client and types"
                );
            }
        }
    }
}
