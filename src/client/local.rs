//! The in-process client: calls the member's [`Server`] directly.
//!
//! It holds the member weakly: a client kept after the member shut down gets
//! `etcdserver: server stopped` instead of keeping the member's storage open.

use std::sync::{Arc, Weak};

use super::{ClientError, EtcdError, Header, KvClient, Reply};
use crate::server::Server;
use crate::types::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    Revision, TxnRequest, TxnResponse,
};

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
}
