//! The lease workload: per op, LeaseGrant, one renewal over the client's LeaseKeepAlive
//! stream, then LeaseRevoke, the whole counted as one op.
//!
//! Owns the client's keepalive stream: opened at its first op, kept for the next ones (as
//! clientv3 keeps one stream for all its leases), reopened after a failure.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mnemo::pb::etcdserverpb::lease_client::LeaseClient;
use mnemo::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::options::Settings;
use crate::report::{Summary, Tally};
use crate::{BenchError, CallError, Client, call, drive};

/// Renewals queued on a keepalive stream: one at a time is in flight per client.
const KEEPALIVE_QUEUE: usize = 1;

/// A client's keepalive stream: where renewals go and where their answers come back.
struct KeepAlive {
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
}

/// Renews lease `id` once over `stream`, opening the stream if there is none.
async fn keep_alive_once(
    lease: &mut LeaseClient<Channel>,
    stream: &mut Option<KeepAlive>,
    id: i64,
    timeout: Duration,
) -> Result<(), CallError> {
    let request = LeaseKeepAliveRequest { id };
    let responses = match stream {
        Some(open) => {
            open.requests
                .send(request)
                .await
                .map_err(|_| CallError::Unexpected("the keepalive stream closed".into()))?;
            &mut open.responses
        }
        None => {
            let (requests, queue) = mpsc::channel(KEEPALIVE_QUEUE);
            // The first renewal is queued before the call is awaited: etcd (gRPC-Go) sends a
            // bidirectional stream's response headers only with its first answer.
            requests
                .send(request)
                .await
                .map_err(|_| CallError::Unexpected("the keepalive queue closed".into()))?;
            let responses =
                call(timeout, lease.lease_keep_alive(ReceiverStream::new(queue))).await?;
            &mut stream
                .insert(KeepAlive {
                    requests,
                    responses,
                })
                .responses
        }
    };
    let answer = match tokio::time::timeout(timeout, responses.message()).await {
        Ok(Ok(Some(answer))) => answer,
        Ok(Ok(None)) => return Err(CallError::Unexpected("the keepalive stream ended".into())),
        Ok(Err(status)) => return Err(CallError::Status(status)),
        Err(_) => return Err(CallError::Timeout),
    };
    if answer.id != id || answer.ttl <= 0 {
        return Err(CallError::Unexpected(format!(
            "keepalive of lease {id} answered id {} ttl {}",
            answer.id, answer.ttl
        )));
    }
    Ok(())
}

/// One op: grant, renew, revoke.
async fn grant_renew_revoke(
    lease: &mut LeaseClient<Channel>,
    stream: &mut Option<KeepAlive>,
    ttl: i64,
    timeout: Duration,
) -> Result<(), CallError> {
    let granted = call(timeout, lease.lease_grant(LeaseGrantRequest { ttl, id: 0 })).await?;
    if !granted.error.is_empty() {
        return Err(CallError::Unexpected(granted.error));
    }
    let renewed = keep_alive_once(lease, stream, granted.id, timeout).await;
    if renewed.is_err() {
        // A stream that failed once is not trusted again.
        *stream = None;
    }
    // Revoke even after a failed renewal, so a failing run leaves no leases behind.
    let revoked = call(
        timeout,
        lease.lease_revoke(LeaseRevokeRequest { id: granted.id }),
    )
    .await;
    renewed?;
    revoked.map(drop)
}

pub async fn run(
    settings: &Arc<Settings>,
    channels: &[Channel],
    ttl: i64,
) -> Result<Summary, BenchError> {
    let (tally, secs) = drive(
        "lease",
        settings,
        channels,
        settings.total,
        settings.duration,
        move |client: Client| async move {
            let mut lease = LeaseClient::new(client.channel.clone());
            let mut stream = None;
            let timeout = client.settings.request_timeout;
            let mut tally = Tally::new();
            while client.next(&mut tally).is_some() {
                let sent = Instant::now();
                match grant_renew_revoke(&mut lease, &mut stream, ttl, timeout).await {
                    Ok(()) => tally.ok(sent.elapsed()),
                    Err(error) => tally.fail(error),
                }
                client.done.fetch_add(1, Ordering::Relaxed);
            }
            tally
        },
    )
    .await?;
    let mut summary = Summary::new("lease", settings.clients, settings.conns, secs, &tally);
    summary.insert("ttl", ttl);
    Ok(summary)
}
