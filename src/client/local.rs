//! The in-process client: calls the member's [`Server`] directly.
//!
//! It holds the member weakly: a client kept after the member shut down gets
//! `etcdserver: server stopped` instead of keeping the member's storage open.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use super::{
    ClientError, EtcdError, Header, KvClient, LeaseGranted, LeaseTimeToLive, Reply, WatchEvents,
    WatchRequest, WatchUpdate,
};
use crate::server::Server;
use crate::types::{
    DeleteRangeRequest, DeleteRangeResponse, LeaseId, PutRequest, PutResponse, RangeRequest,
    RangeResponse, Revision, TxnRequest, TxnResponse,
};
use crate::watch::{Message, WatchError, WatchReceiver, WatchStream};

/// A client bound to a member in this process.
#[derive(Clone)]
pub struct LocalClient {
    server: Weak<Server>,
}

impl LocalClient {
    /// A client of `server`.
    pub fn new(server: &Arc<Server>) -> LocalClient {
        LocalClient {
            server: Arc::downgrade(server),
        }
    }

    fn server(&self) -> Result<Arc<Server>, ClientError> {
        self.server
            .upgrade()
            .ok_or(ClientError::Etcd(EtcdError::Stopped))
    }
}

fn reply<T>((response, header): (T, Header)) -> Reply<T> {
    Reply { header, response }
}

impl KvClient for LocalClient {
    async fn range(&self, request: RangeRequest) -> Result<Reply<RangeResponse>, ClientError> {
        Ok(reply(self.server()?.range(request).await?))
    }

    async fn put(&self, request: PutRequest) -> Result<Reply<PutResponse>, ClientError> {
        Ok(reply(self.server()?.put(request).await?))
    }

    async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<Reply<DeleteRangeResponse>, ClientError> {
        Ok(reply(self.server()?.delete_range(request).await?))
    }

    async fn txn(&self, request: TxnRequest) -> Result<Reply<TxnResponse>, ClientError> {
        Ok(reply(self.server()?.txn(request).await?))
    }

    async fn compact(&self, revision: Revision, physical: bool) -> Result<Header, ClientError> {
        Ok(self.server()?.compact(revision, physical).await?)
    }

    async fn lease_grant(&self, ttl: i64, id: LeaseId) -> Result<Reply<LeaseGranted>, ClientError> {
        Ok(reply(self.server()?.lease_grant(ttl, id).await?))
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<Header, ClientError> {
        Ok(self.server()?.lease_revoke(id).await?)
    }

    async fn lease_keep_alive_once(&self, id: LeaseId) -> Result<Reply<i64>, ClientError> {
        Ok(reply(self.server()?.lease_keep_alive(id).await?))
    }

    async fn lease_time_to_live(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> Result<Reply<LeaseTimeToLive>, ClientError> {
        Ok(reply(self.server()?.lease_time_to_live(id, keys).await?))
    }

    async fn lease_leases(&self) -> Result<Reply<Vec<LeaseId>>, ClientError> {
        Ok(reply(self.server()?.lease_leases().await?))
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchEvents, ClientError> {
        let server = self.server()?;
        let (stream, mut receiver) = server.watch().open_stream().map_err(|err| match err {
            WatchError::TooManyStreams => ClientError::Etcd(EtcdError::TooManyWatchStreams),
            other => ClientError::WatchCanceled(other.to_string()),
        })?;
        drop(server);
        let stopped = || ClientError::Etcd(EtcdError::Stopped);
        stream.create(request).await.map_err(|_| stopped())?;
        let mut pending = VecDeque::new();
        // The reply to the create comes first on the stream.
        loop {
            let batch = receiver.recv().await.ok_or_else(stopped)?;
            pending.extend(batch.take());
            match pending.pop_front() {
                Some(Message::Created { .. }) => break,
                Some(Message::Refused { reason, .. }) => {
                    return Err(ClientError::WatchCanceled(reason.to_string()));
                }
                _ => {}
            }
        }
        let local = LocalWatch {
            server: self.server.clone(),
            _stream: stream,
            receiver,
            pending,
            ended: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            local,
            |mut local| async move {
                let item = local.next().await?;
                Some((item, local))
            },
        )))
    }
}

/// An in-process watch: the hub's messages for one watcher, as updates.
struct LocalWatch {
    server: Weak<Server>,
    /// Keeps the watcher registered for as long as the stream is read.
    _stream: WatchStream,
    receiver: WatchReceiver,
    pending: VecDeque<Message>,
    ended: bool,
}

impl LocalWatch {
    async fn next(&mut self) -> Option<Result<WatchUpdate, ClientError>> {
        if self.ended {
            return None;
        }
        loop {
            let Some(message) = self.pending.pop_front() else {
                let Some(batch) = self.receiver.recv().await else {
                    self.ended = true;
                    return Some(Err(ClientError::Etcd(EtcdError::Stopped)));
                };
                self.pending.extend(batch.take());
                continue;
            };
            let update = |revision, events| {
                let server = self.server.upgrade()?;
                Some(WatchUpdate {
                    header: server.header(revision),
                    events,
                })
            };
            let item = match message {
                Message::Events {
                    revision, events, ..
                } => update(revision, events),
                Message::Progress { revision, .. } => update(revision, Vec::new()),
                Message::Compacted {
                    compact_revision, ..
                } => {
                    self.ended = true;
                    return Some(Err(ClientError::WatchCompacted { compact_revision }));
                }
                Message::Canceled { .. } | Message::Created { .. } | Message::Refused { .. } => {
                    continue;
                }
            };
            return match item {
                Some(update) => Some(Ok(update)),
                None => {
                    self.ended = true;
                    Some(Err(ClientError::Etcd(EtcdError::Stopped)))
                }
            };
        }
    }
}
