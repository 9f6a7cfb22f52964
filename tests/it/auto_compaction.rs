//! Auto-compaction on a live member: `--auto-compaction-mode periodic` with a short retention
//! compacts history by itself, keeping at least the retention's worth. (Revision mode checks
//! every five minutes, as etcd does, so its schedule is covered by the compactor's unit tests
//! with simulated time instead.)

use std::time::{Duration, Instant};

use mnemo::pb::etcdserverpb::kv_client::KvClient;
use mnemo::pb::etcdserverpb::{PutRequest, RangeRequest};

use crate::support::{Member, poll_until};

/// The retention the member is started with.
const RETENTION: Duration = Duration::from_secs(2);

#[tokio::test]
async fn periodic_auto_compaction_keeps_the_retention_and_drops_older_history() {
    let member = Member::start_with_flags(
        "auto",
        &[
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "2s",
        ],
    )
    .await;
    let mut kv = KvClient::new(member.channel().await);
    let put = |value: &str| PutRequest {
        key: b"k".to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..PutRequest::default()
    };
    let first = kv.put(put("v1")).await.unwrap().into_inner();
    let first_revision = first.header.unwrap().revision;
    let started = Instant::now();
    for round in 2..=4 {
        kv.put(put(&format!("v{round}"))).await.unwrap();
    }
    let at = |revision: i64| RangeRequest {
        key: b"k".to_vec().into(),
        revision,
        ..RangeRequest::default()
    };
    // Within the retention, the old revision is still readable.
    assert!(kv.range(at(first_revision)).await.is_ok());
    // Soon after the retention has passed, the leader compacts at a revision sampled at least
    // that long ago: the first revision goes, and the compaction leaves the newest value.
    poll_until(
        "the first revision is compacted",
        Duration::from_secs(10),
        || {
            let mut kv = kv.clone();
            async move {
                match kv.range(at(first_revision)).await {
                    Err(status) if status.message().contains("compacted") => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
    assert!(
        started.elapsed() >= RETENTION,
        "compacted after {:?}, before the retention of {RETENTION:?}",
        started.elapsed()
    );
    let latest = kv.range(at(0)).await.unwrap().into_inner();
    assert_eq!(&latest.kvs[0].value[..], b"v4");
}
