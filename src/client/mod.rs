//! The client API: one trait, [`KvClient`], with an in-process implementation
//! ([`LocalClient`], no gRPC, no copies through protobuf) and a gRPC one ([`GrpcClient`]) for
//! remote members, real etcd included.
//!
//! Builders for requests live beside the domain types (`RangeRequest::key("a").limit(5)`).
//! This module must not reach into server internals beyond the `Server` facade.

mod builders;
pub mod concurrency;
mod grpc;
mod keeper;
mod local;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

pub use self::grpc::GrpcClient;
pub use self::keeper::LeaseKeeper;
pub use self::local::LocalClient;
pub use crate::server::{Error as EtcdError, Header, LeaseGranted, LeaseTimeToLive};
use crate::types::{
    DeleteRangeRequest, DeleteRangeResponse, Event, KeyValue, LeaseId, PutRequest, PutResponse,
    RangeRequest, RangeResponse, Revision, TxnRequest, TxnResponse,
};
pub use crate::watch::CreateRequest as WatchRequest;

/// A client-side failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The member refused the request with one of etcd's errors.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The request did not reach the member, or the answer did not come back.
    #[error("transport: {0}")]
    Transport(String),
    /// No answer came within the client's deadline for one call: the members it reached are
    /// stuck or cut off (Go's context error says the same).
    #[error("context deadline exceeded: no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// A watch's next revision was compacted away; the watch has ended.
    #[error(
        "etcdserver: mvcc: required revision has been compacted (compact revision {compact_revision})"
    )]
    WatchCompacted {
        /// The member's compact revision: resume above it, after re-reading state.
        compact_revision: Revision,
    },
    /// The member refused or cancelled a watch, with its reason.
    #[error("watch canceled: {0}")]
    WatchCanceled(String),
}

/// One response of a watch: the events of one or more whole revisions, or (with no events)
/// a progress notification saying every matching event up to `header.revision` was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchUpdate {
    /// The response header.
    pub header: Header,
    /// Events in revision order; empty for a progress notification.
    pub events: Vec<Event>,
}

/// A watch as an async stream. It ends after an error item, or when the member stops.
pub type WatchEvents = Pin<Box<dyn Stream<Item = Result<WatchUpdate, ClientError>> + Send>>;

/// A response with its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply<T> {
    /// The response header.
    pub header: Header,
    /// The response body.
    pub response: T,
}

/// The KV operations of an etcd-compatible member.
pub trait KvClient: Send + Sync {
    /// Reads a key range.
    fn range(
        &self,
        request: RangeRequest,
    ) -> impl Future<Output = Result<Reply<RangeResponse>, ClientError>> + Send;

    /// Writes one key.
    fn put(
        &self,
        request: PutRequest,
    ) -> impl Future<Output = Result<Reply<PutResponse>, ClientError>> + Send;

    /// Deletes a key range.
    fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> impl Future<Output = Result<Reply<DeleteRangeResponse>, ClientError>> + Send;

    /// Runs a transaction.
    fn txn(
        &self,
        request: TxnRequest,
    ) -> impl Future<Output = Result<Reply<TxnResponse>, ClientError>> + Send;

    /// Compacts history up to `revision`.
    fn compact(
        &self,
        revision: Revision,
        physical: bool,
    ) -> impl Future<Output = Result<Header, ClientError>> + Send;

    /// Watches a key range. Resolves once the member accepted the watch; the stream then
    /// yields every matching change from the start revision on, in order, each once. The gRPC
    /// client resumes after a broken connection from the revision after the last one seen.
    fn watch(
        &self,
        request: WatchRequest,
    ) -> impl Future<Output = Result<WatchEvents, ClientError>> + Send;

    /// Grants a lease of `ttl` seconds (`id` 0: the member picks the id).
    fn lease_grant(
        &self,
        ttl: i64,
        id: LeaseId,
    ) -> impl Future<Output = Result<Reply<LeaseGranted>, ClientError>> + Send;

    /// Revokes a lease, deleting its keys.
    fn lease_revoke(&self, id: LeaseId)
    -> impl Future<Output = Result<Header, ClientError>> + Send;

    /// Renews a lease once; the TTL is 0 when the lease is unknown or expired.
    fn lease_keep_alive_once(
        &self,
        id: LeaseId,
    ) -> impl Future<Output = Result<Reply<i64>, ClientError>> + Send;

    /// A lease's remaining and granted TTL (and keys when asked for); TTL -1 when unknown.
    fn lease_time_to_live(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> impl Future<Output = Result<Reply<LeaseTimeToLive>, ClientError>> + Send;

    /// Every granted lease id.
    fn lease_leases(&self)
    -> impl Future<Output = Result<Reply<Vec<LeaseId>>, ClientError>> + Send;

    /// Reads one key's latest version.
    fn get(
        &self,
        key: impl Into<Bytes> + Send,
    ) -> impl Future<Output = Result<Option<KeyValue>, ClientError>> + Send {
        let request = RangeRequest::key(key);
        async move { Ok(self.range(request).await?.response.kvs.into_iter().next()) }
    }

    /// Sets one key, returning the new revision.
    fn set(
        &self,
        key: impl Into<Bytes> + Send,
        value: impl Into<Bytes> + Send,
    ) -> impl Future<Output = Result<Revision, ClientError>> + Send {
        let request = PutRequest::new(key, value);
        async move { Ok(self.put(request).await?.header.revision) }
    }
}
