//! Member-level tests: snapshots and log purging keep the log bounded, and a member restarted
//! after a purge still holds every key.

use std::time::Duration;

use super::*;
use crate::client::KvClient;
use crate::types::RangeRequest;

/// Snapshot every this many entries, so a few hundred writes roll the log several times.
const TEST_SNAPSHOT_COUNT: u64 = 100;
/// Writes done in the test; several snapshot periods.
const TEST_WRITES: usize = 450;
/// How long the test waits for a snapshot to be taken and the log purged.
const COMPACTION_DEADLINE: Duration = Duration::from_secs(30);

fn test_config(data_dir: &std::path::Path) -> Config {
    Config {
        data_dir: data_dir.to_path_buf(),
        listen_client_urls: vec!["http://127.0.0.1:0".parse().unwrap()],
        snapshot_count: TEST_SNAPSHOT_COUNT,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_is_snapshotted_and_purged_and_restart_keeps_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(test_config(dir.path())).await.unwrap();
    let client = node.client();
    for index in 0..TEST_WRITES {
        client
            .set(format!("key/{index:04}"), format!("value-{index}"))
            .await
            .unwrap();
    }
    // Snapshots are taken in the background; wait until one covers most of the writes and
    // the log before it has been purged.
    let (snapshot, purged) = node
        .server()
        .raft()
        .wait_for_log_compaction(TEST_SNAPSHOT_COUNT * 3, COMPACTION_DEADLINE)
        .await
        .expect("a snapshot and a purge within the deadline");
    assert!(
        purged < snapshot,
        "purge {purged} must stay behind snapshot {snapshot}"
    );
    let before = client.range(RangeRequest::prefix("key/")).await.unwrap();
    assert_eq!(before.response.count, TEST_WRITES as i64);
    node.shutdown().await;

    let node = Node::start(test_config(dir.path())).await.unwrap();
    let client = node.client();
    let after = client.range(RangeRequest::prefix("key/")).await.unwrap();
    assert_eq!(after.response, before.response);
    assert_eq!(after.header.revision, before.header.revision);
    // The member keeps working after replaying from the snapshot.
    let next = client.set("key/after", "restart").await.unwrap();
    assert_eq!(next, before.header.revision + 1);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        election_timeout: Duration::from_millis(100),
        ..test_config(dir.path())
    };
    let Err(error) = Node::start(config).await else {
        panic!("an invalid config must not start")
    };
    assert!(matches!(error, NodeError::Config(_)), "{error}");
    assert!(
        !dir.path().join("member").exists(),
        "nothing may be created for a refused config"
    );
}
