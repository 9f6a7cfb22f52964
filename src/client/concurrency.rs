//! Locks and elections over any [`KvClient`], with the same keys and steps as etcd's
//! concurrency recipes, so they interoperate with `etcdctl lock` / `etcdctl elect` and with
//! clientv3's `concurrency` package. The member's Lock and Election services run these same
//! functions over the in-process client.
//!
//! A contender's key is `<name>/<lease id in lowercase hex>`, created under the contender's
//! lease. Contenders are ordered by create revision; each waits for the delete of the key
//! created just before its own (`max_create_revision`, sort by create, limit 1), so a release
//! wakes exactly one waiter.
//!
//! Must not reach into the server: everything goes through the client trait.

use bytes::Bytes;
use futures::StreamExt;

use super::{ClientError, EtcdError, Header, KvClient, WatchRequest};
use crate::types::{
    Compare, CompareResult, DeleteRangeRequest, EventType, KeyValue, LeaseId, PutRequest,
    RangeRequest, RequestOp, ResponseOp, Revision, SortOrder, SortTarget, TxnRequest,
};

/// A held election leadership, as Campaign returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderKey {
    /// The election's name.
    pub name: Bytes,
    /// The leader's key.
    pub key: Bytes,
    /// The key's create revision.
    pub rev: Revision,
    /// The leader's lease.
    pub lease: LeaseId,
}

/// The key of a contender holding `lease` under `name`.
fn contender_key(name: &[u8], lease: LeaseId) -> Bytes {
    let mut key = name.to_vec();
    key.extend_from_slice(format!("/{lease:x}").as_bytes());
    Bytes::from(key)
}

/// The prefix under which the contenders of `name` live.
pub fn contenders(name: &[u8]) -> Bytes {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    Bytes::from(prefix)
}

/// Creates this contender's key unless it exists; returns the key's create revision, its
/// value if it already existed, and the header.
async fn enter<C: KvClient>(
    client: &C,
    key: &Bytes,
    value: &Bytes,
    lease: LeaseId,
) -> Result<(Revision, Option<Bytes>, Header), ClientError> {
    let created = Compare::create_revision(key.clone(), CompareResult::Equal, 0);
    let txn = TxnRequest::when([created])
        .and_then([
            RequestOp::from(PutRequest::new(key.clone(), value.clone()).with_lease(lease)),
            RangeRequest::key(key.clone()).into(),
        ])
        .or_else([RangeRequest::key(key.clone()).into()]);
    let reply = client.txn(txn).await?;
    let succeeded = reply.response.succeeded;
    let kv = reply
        .response
        .responses
        .into_iter()
        .find_map(|op| match op {
            ResponseOp::Range(range) => range.kvs.into_iter().next(),
            _ => None,
        })
        .ok_or_else(|| ClientError::Transport("contender key vanished at once".into()))?;
    let existing = (!succeeded).then_some(kv.value);
    Ok((kv.create_revision, existing, reply.header))
}

/// Waits until no key under `prefix` was created before `rev`.
async fn wait_for_predecessors<C: KvClient>(
    client: &C,
    prefix: &Bytes,
    rev: Revision,
) -> Result<Header, ClientError> {
    loop {
        let newest_before = RangeRequest::prefix(prefix.clone())
            .sort(SortTarget::Create, SortOrder::Descend)
            .limit(1)
            .max_create_revision(rev - 1);
        let reply = client.range(newest_before).await?;
        let Some(predecessor) = reply.response.kvs.into_iter().next() else {
            return Ok(reply.header);
        };
        wait_for_delete(client, predecessor.key, reply.header.revision + 1).await?;
    }
}

/// Waits until `key` is deleted at or after `from`.
async fn wait_for_delete<C: KvClient>(
    client: &C,
    key: Bytes,
    from: Revision,
) -> Result<(), ClientError> {
    let mut watch = client
        .watch(WatchRequest::key(key).from_revision(from).without_puts())
        .await?;
    while let Some(update) = watch.next().await {
        if update?
            .events
            .iter()
            .any(|event| event.kind == EventType::Delete)
        {
            return Ok(());
        }
    }
    Err(ClientError::Etcd(EtcdError::Stopped))
}

/// Deletes `key` if a wait is abandoned (the future dropped) before it finished, so a
/// cancelled contender does not block the others.
struct Abandon<C: KvClient + Clone + 'static> {
    client: C,
    key: Option<Bytes>,
}

impl<C: KvClient + Clone + 'static> Abandon<C> {
    fn disarm(mut self) {
        self.key = None;
    }
}

impl<C: KvClient + Clone + 'static> Drop for Abandon<C> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let client = self.client.clone();
            runtime.spawn(async move {
                let _ = client.delete_range(DeleteRangeRequest::key(key)).await;
            });
        }
    }
}

/// Acquires the lock `name` for `lease`, waiting for earlier holders; returns the lock key
/// (pass it to [`unlock`]) and the header of the acquisition.
///
/// # Errors
/// An unknown lease (`etcdserver: requested lease not found`), transport errors.
pub async fn lock<C>(
    client: &C,
    name: &[u8],
    lease: LeaseId,
) -> Result<(Bytes, Header), ClientError>
where
    C: KvClient + Clone + 'static,
{
    let key = contender_key(name, lease);
    let (rev, _, _) = enter(client, &key, &Bytes::new(), lease).await?;
    let guard = Abandon {
        client: client.clone(),
        key: Some(key.clone()),
    };
    let header = wait_for_predecessors(client, &contenders(name), rev).await?;
    guard.disarm();
    Ok((key, header))
}

/// Releases a lock by deleting its key.
///
/// # Errors
/// Transport errors.
pub async fn unlock<C: KvClient>(client: &C, key: Bytes) -> Result<Header, ClientError> {
    Ok(client
        .delete_range(DeleteRangeRequest::key(key))
        .await?
        .header)
}

/// Campaigns in election `name` with `value`, waiting until this contender leads.
///
/// # Errors
/// An unknown lease, transport errors.
pub async fn campaign<C>(
    client: &C,
    name: &[u8],
    lease: LeaseId,
    value: Bytes,
) -> Result<(LeaderKey, Header), ClientError>
where
    C: KvClient + Clone + 'static,
{
    let key = contender_key(name, lease);
    let (rev, existing, _) = enter(client, &key, &value, lease).await?;
    let leader = LeaderKey {
        name: Bytes::copy_from_slice(name),
        key: key.clone(),
        rev,
        lease,
    };
    // Campaigning again under the same lease with another value updates it.
    if existing.is_some_and(|current| current != value) {
        proclaim(client, &leader, value).await?;
    }
    let guard = Abandon {
        client: client.clone(),
        key: Some(key),
    };
    let header = wait_for_predecessors(client, &contenders(name), rev).await?;
    guard.disarm();
    Ok((leader, header))
}

/// Sets the leader's value, if `leader` still leads.
///
/// # Errors
/// [`EtcdError::ElectionNotLeader`] when the key is gone or was re-created.
pub async fn proclaim<C: KvClient>(
    client: &C,
    leader: &LeaderKey,
    value: Bytes,
) -> Result<Header, ClientError> {
    let still = Compare::create_revision(leader.key.clone(), CompareResult::Equal, leader.rev);
    let txn = TxnRequest::when([still]).and_then([RequestOp::from(
        PutRequest::new(leader.key.clone(), value).with_lease(leader.lease),
    )]);
    let reply = client.txn(txn).await?;
    if !reply.response.succeeded {
        return Err(ClientError::Etcd(EtcdError::ElectionNotLeader));
    }
    Ok(reply.header)
}

/// The current leader's key-value in election `name`.
///
/// # Errors
/// [`EtcdError::ElectionNoLeader`] when nobody leads.
pub async fn leader<C: KvClient>(
    client: &C,
    name: &[u8],
) -> Result<(KeyValue, Header), ClientError> {
    let first = RangeRequest::prefix(contenders(name))
        .sort(SortTarget::Create, SortOrder::Ascend)
        .limit(1);
    let reply = client.range(first).await?;
    let kv = reply
        .response
        .kvs
        .into_iter()
        .next()
        .ok_or(ClientError::Etcd(EtcdError::ElectionNoLeader))?;
    Ok((kv, reply.header))
}

/// Gives up leadership (deletes the key if it still belongs to `leader`).
///
/// # Errors
/// Transport errors.
pub async fn resign<C: KvClient>(client: &C, leader: &LeaderKey) -> Result<Header, ClientError> {
    let still = Compare::create_revision(leader.key.clone(), CompareResult::Equal, leader.rev);
    let txn = TxnRequest::when([still])
        .and_then([RequestOp::from(DeleteRangeRequest::key(leader.key.clone()))]);
    Ok(client.txn(txn).await?.header)
}

/// The leaders of election `name` as they change: the current one (once there is one), then
/// every new value it proclaims and every next leader. Ends with an error item on failure.
pub fn observe<C>(
    client: C,
    name: Bytes,
) -> impl futures::Stream<Item = Result<(KeyValue, Header), ClientError>> + Send
where
    C: KvClient + Clone + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        if let Err(err) = observe_into(&client, &name, &tx).await {
            let _ = tx.send(Err(err)).await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

type Observed = tokio::sync::mpsc::Sender<Result<(KeyValue, Header), ClientError>>;

async fn observe_into<C: KvClient>(
    client: &C,
    name: &[u8],
    tx: &Observed,
) -> Result<(), ClientError> {
    let prefix = contenders(name);
    loop {
        let (current, header) = match leader(client, name).await {
            Ok(found) => found,
            Err(ClientError::Etcd(EtcdError::ElectionNoLeader)) => {
                // Wait for someone to campaign, then look again.
                let from = client
                    .range(RangeRequest::key(prefix.clone()))
                    .await?
                    .header
                    .revision
                    + 1;
                let mut watch = client
                    .watch(
                        WatchRequest::prefix(prefix.clone())
                            .from_revision(from)
                            .without_deletes(),
                    )
                    .await?;
                if watch.next().await.transpose()?.is_none() {
                    return Ok(());
                }
                continue;
            }
            Err(err) => return Err(err),
        };
        if tx.send(Ok((current.clone(), header))).await.is_err() {
            return Ok(());
        }
        // Follow this leader's key until it is deleted.
        let mut watch = client
            .watch(WatchRequest::key(current.key.clone()).from_revision(current.mod_revision + 1))
            .await?;
        'leader: while let Some(update) = watch.next().await {
            let update = update?;
            for event in update.events {
                match event.kind {
                    EventType::Put => {
                        if tx.send(Ok((event.kv, update.header))).await.is_err() {
                            return Ok(());
                        }
                    }
                    EventType::Delete => break 'leader,
                }
            }
        }
    }
}
