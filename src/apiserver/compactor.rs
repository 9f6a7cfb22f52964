//! Periodic compaction the way kube-apiserver does it (`storage/etcd3/compact.go`): every
//! interval, `Txn(If version("compact_rev_key") == t, Then Put(compact_rev_key, last_rev),
//! Else Get(compact_rev_key))`; the winner compacts to the revision it saw one interval
//! earlier, so history of one to two intervals is kept, and of several API servers on one
//! store only one compacts per interval (the key's version elects it).
//!
//! Speaks only `KvClient`.

use std::time::Duration;

use crate::client::KvClient;
use crate::types::{Compare, CompareResult, PutRequest, RangeRequest, TxnRequest};

/// The election key, at the keyspace root as kube-apiserver keeps it.
pub const COMPACT_REV_KEY: &str = "compact_rev_key";

/// The state carried from one round to the next: the key version this server expects, and
/// the revision seen at the last round (the next compaction target).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Expected version of [`COMPACT_REV_KEY`].
    pub version: i64,
    /// The store revision at the last round; 0 before the first.
    pub revision: i64,
}

/// What one round did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// This server won the round and compacted to this revision.
    Compacted(i64),
    /// This server won the first round: nothing to compact yet.
    Started,
    /// Another server wrote the key since: it compacts this interval.
    Lost,
}

/// Runs one round. Compaction errors (for example a revision another server compacted
/// already) are logged by the caller and do not stop the loop.
pub async fn round<C: KvClient>(
    client: &C,
    state: Round,
) -> Result<(Round, Outcome), crate::client::ClientError> {
    let txn = TxnRequest::when([Compare::version(
        COMPACT_REV_KEY,
        CompareResult::Equal,
        state.version,
    )])
    .and_then([PutRequest::new(COMPACT_REV_KEY, state.revision.to_string()).into()])
    .or_else([RangeRequest::key(COMPACT_REV_KEY).into()]);
    let reply = client.txn(txn).await?;
    let current = reply.header.revision;
    if !reply.response.succeeded {
        let version = reply
            .response
            .responses
            .first()
            .and_then(|op| super::store::range_kvs(op).first())
            .map_or(0, |kv| kv.version);
        return Ok((
            Round {
                version,
                revision: current,
            },
            Outcome::Lost,
        ));
    }
    let next = Round {
        version: state.version + 1,
        revision: current,
    };
    if state.revision == 0 {
        // Nothing seen one interval ago yet: no compaction on the first round.
        return Ok((next, Outcome::Started));
    }
    client.compact(state.revision, false).await?;
    Ok((next, Outcome::Compacted(state.revision)))
}

/// Compacts every `interval` until the task is dropped.
pub async fn run<C: KvClient>(client: C, interval: Duration) {
    let mut state = Round::default();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match round(&client, state).await {
            Ok((next, outcome)) => {
                tracing::debug!(?outcome, "apiserver compaction round");
                state = next;
            }
            Err(err) => {
                // Keep the expected version, and try again with a fresh revision next time.
                tracing::warn!(%err, "apiserver compaction failed");
            }
        }
    }
}
