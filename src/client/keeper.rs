//! Keeping a lease alive from a client: a background task renews it every third of its TTL
//! (as clientv3 does) until the handle is dropped or the lease is gone.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ClientError, Header, KvClient};
use crate::limits::CLIENT_KEEPALIVE_RETRY;
use crate::types::LeaseId;

/// A lease kept alive in the background. Dropping it stops the renewals (the lease then
/// expires after its TTL); [`LeaseKeeper::revoke`] ends it at once.
#[derive(Debug)]
pub struct LeaseKeeper {
    id: LeaseId,
    ttl: i64,
    alive: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// Grants a lease of `ttl` seconds and starts keeping it alive.
    ///
    /// # Errors
    /// The grant's error.
    pub async fn grant<C>(client: &C, ttl: i64) -> Result<LeaseKeeper, ClientError>
    where
        C: KvClient + Clone + 'static,
    {
        let granted = client.lease_grant(ttl, 0).await?.response;
        Ok(LeaseKeeper::keep(client.clone(), granted.id, granted.ttl))
    }

    /// Keeps the existing lease `id` (granted with `ttl` seconds) alive.
    pub fn keep<C>(client: C, id: LeaseId, ttl: i64) -> LeaseKeeper
    where
        C: KvClient + 'static,
    {
        let (alive_tx, alive) = watch::channel(true);
        let period = Duration::from_millis(u64::try_from(ttl.max(1)).unwrap_or(1) * 1000 / 3);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                loop {
                    match client.lease_keep_alive_once(id).await {
                        Ok(reply) if reply.response > 0 => break,
                        Ok(_) => {
                            alive_tx.send_replace(false);
                            return;
                        }
                        Err(err) => {
                            tracing::debug!(%err, lease = id, "lease renewal failed; retrying");
                            tokio::time::sleep(CLIENT_KEEPALIVE_RETRY).await;
                        }
                    }
                }
            }
        });
        LeaseKeeper {
            id,
            ttl,
            alive,
            task,
        }
    }

    /// The lease id.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// The granted TTL in seconds.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// False once a renewal found the lease gone.
    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Resolves when a renewal finds the lease gone.
    pub async fn lost(&mut self) {
        let _ = self.alive.wait_for(|alive| !*alive).await;
    }

    /// Stops renewing and revokes the lease, deleting its keys.
    ///
    /// # Errors
    /// The revoke's error.
    pub async fn revoke<C: KvClient>(self, client: &C) -> Result<Header, ClientError> {
        self.task.abort();
        client.lease_revoke(self.id).await
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}
