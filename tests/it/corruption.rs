//! The corruption check (etcd's `--experimental-corrupt-check-time` and
//! `--experimental-initial-corrupt-check`): a member whose stored history was altered on disk
//! behind Raft's back is found by the leader's periodic HashKV comparison, which raises the
//! CORRUPT alarm for that member and so stops every write; with the start-up check, the altered
//! member refuses to start while a healthy one starts.
//!
//! The alteration is real: the member is stopped and one value of its RocksDB history is
//! rewritten in place (same length, still a well-formed row), as a bad disk or a bug would.

use std::path::Path;
use std::time::Duration;

use mnemo::pb::etcdserverpb::{CompactionRequest, PutRequest};
use mnemo::storage::backend::{BackendBatch, Cf};
use mnemo::storage::member_db::MemberDb;

use crate::support::cluster::{Cluster, ClusterOptions, poll_until_or_dump};
use crate::support::{assert_fails_with, ok_stdout};

/// The leader compares every member's hash this often.
const CHECK_INTERVAL_FLAG: &str = "--experimental-corrupt-check-time=1s";
/// Keys written before the alteration; the first half is overwritten after a compaction so
/// the compared history starts past revision 1.
const KEYS: usize = 40;
/// The value altered on the stopped member, and what it becomes.
const ALTERED_FROM: &[u8] = b"value-0033";
const ALTERED_TO: &[u8] = b"VALUE-0033";
/// How long the leader may take to find the alteration: several check intervals.
const DETECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a member refusing to start may take to exit.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one call on a healthy member.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// etcd's refusal of any write under a CORRUPT alarm.
const CORRUPT: &str = "etcdserver: corrupt cluster";
/// etcd's words when the start-up check finds a peer that disagrees.
const INCONSISTENT: &str = "found data inconsistency with peers";

/// Rewrites, in the stopped member's database, the one history row holding `from` so that it
/// holds `to` instead. Panics unless exactly one row matched.
fn alter_history(data_dir: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len(), "the row must stay well-formed");
    let db = MemberDb::open(&data_dir.join("member")).expect("open the stopped member's db");
    let backend = db.store().backend();
    let mut batch = BackendBatch::new();
    let mut altered = 0;
    for row in backend.scan(Cf::Kv, &[], None) {
        let (key, value) = row.expect("scan the history");
        if let Some(at) = value.windows(from.len()).position(|window| window == from) {
            let mut changed = value.to_vec();
            changed[at..at + from.len()].copy_from_slice(to);
            batch.put(Cf::Kv, key.to_vec(), changed);
            altered += 1;
        }
    }
    assert_eq!(altered, 1, "rows holding {from:?}");
    backend.write(batch).expect("write the altered row");
}

#[tokio::test]
async fn an_altered_member_raises_corrupt_stops_writes_and_fails_the_start_up_check() {
    let mut options = ClusterOptions::new(3);
    options.slot_args = (0..3)
        .map(|slot| (slot, vec![CHECK_INTERVAL_FLAG.to_owned()]))
        .collect();
    let mut cluster = Cluster::start_with(options).await;
    let leader = cluster.wait_leader(&[0, 1, 2]).await;
    let victim = (leader + 1) % 3;
    let healthy = (leader + 2) % 3;
    let victim_id = cluster.id(victim);

    // Writes through every member, a compaction, then overwrites past it.
    for key in 0..KEYS {
        let mut kv = cluster.kv(key % 3, CALL_TIMEOUT);
        let put = kv
            .put(PutRequest {
                key: format!("key/{key:04}").into_bytes().into(),
                value: format!("value-{key:04}").into_bytes().into(),
                ..PutRequest::default()
            })
            .await
            .expect("put")
            .into_inner();
        if key == KEYS / 2 {
            let revision = put.header.expect("header").revision;
            kv.compact(CompactionRequest {
                revision,
                physical: true,
            })
            .await
            .expect("compact");
        }
    }
    for key in 0..KEYS / 2 {
        cluster
            .kv(leader, CALL_TIMEOUT)
            .put(PutRequest {
                key: format!("key/{key:04}").into_bytes().into(),
                value: format!("again-{key:04}").into_bytes().into(),
                ..PutRequest::default()
            })
            .await
            .expect("overwrite");
    }
    cluster.assert_converged(&[0, 1, 2]).await;
    // Several check rounds over identical members raise nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        ok_stdout(&cluster.etcdctl(&[leader], &["alarm", "list"])),
        "",
        "no alarm while the members agree"
    );

    cluster.terminate(victim).await;
    alter_history(&cluster.member(victim).data_dir(), ALTERED_FROM, ALTERED_TO);
    // Not `restart`: that waits for /health, which turns 503 as soon as the alarm is raised.
    cluster.spawn_detached(victim);
    // The leader's check names exactly that member...
    let expected = format!("memberID:{victim_id} alarm:CORRUPT \n");
    let this = &cluster;
    poll_until_or_dump(this, "the CORRUPT alarm", DETECT_TIMEOUT, || {
        let expected = expected.clone();
        async move {
            let listed = this.etcdctl(&[leader], &["alarm", "list"]);
            (listed.status.success() && String::from_utf8_lossy(&listed.stdout) == expected)
                .then_some(())
        }
    })
    .await;
    // ...whose own state shows the alteration.
    assert_eq!(
        ok_stdout(&cluster.etcdctl(
            &[victim],
            &["get", "key/0033", "--print-value-only", "--consistency=s"]
        )),
        "VALUE-0033\n"
    );
    for slot in 0..3 {
        assert_fails_with(
            &cluster.etcdctl(&[slot], &["put", "after", "corrupt"]),
            &format!("Error: {CORRUPT}"),
        );
    }

    // With the start-up check, the altered member refuses to start beside its peers.
    cluster.terminate(victim).await;
    cluster
        .stopped_member_mut(victim)
        .push_args(&["--experimental-initial-corrupt-check"]);
    cluster.spawn_detached(victim);
    let status = cluster
        .wait_exit(victim, REFUSE_TIMEOUT)
        .await
        .expect("the altered member exits");
    assert!(!status.success(), "refused start exits non-zero: {status}");
    let log = cluster.member(victim).log_text();
    assert!(
        log.contains(INCONSISTENT),
        "the refusal says why:\n{}",
        cluster.log_tails()
    );

    // A healthy member passes the same check (the altered one is down) and serves.
    cluster.terminate(healthy).await;
    cluster
        .stopped_member_mut(healthy)
        .push_args(&["--experimental-initial-corrupt-check"]);
    cluster.spawn_detached(healthy);
    // Not `restart`: /health stays 503 while the CORRUPT alarm is raised; reads still work.
    let this = &cluster;
    poll_until_or_dump(
        this,
        "a read from the healthy member",
        DETECT_TIMEOUT,
        || async move {
            let read = this.etcdctl(&[healthy], &["get", "key/0033", "--print-value-only"]);
            (read.status.success() && read.stdout == b"value-0033\n").then_some(())
        },
    )
    .await;
}

/// After writes through every member and compactions, `etcdctl endpoint hashkv` prints one
/// `endpoint, hash` line per member in etcd's shape, with equal hashes, and its JSON form
/// carries the compact revision; equal at an older revision too.
#[tokio::test]
async fn endpoint_hashkv_is_equal_on_every_member_after_load_and_compactions() {
    let cluster = Cluster::start(3).await;
    let mut last_revision = 0;
    for round in 0..3 {
        for key in 0..KEYS {
            let put = cluster
                .kv(key % 3, CALL_TIMEOUT)
                .put(PutRequest {
                    key: format!("key/{:04}", key % 7).into_bytes().into(),
                    value: format!("round-{round}-{key}").into_bytes().into(),
                    ..PutRequest::default()
                })
                .await
                .expect("put")
                .into_inner();
            last_revision = put.header.expect("header").revision;
        }
        let compact_at = last_revision - 10;
        ok_stdout(&cluster.etcdctl(
            &[round % 3],
            &["compaction", &compact_at.to_string(), "--physical"],
        ));
    }
    cluster.assert_converged(&[0, 1, 2]).await;
    for revision in [0, last_revision - 5] {
        let rev_flag = format!("--rev={revision}");
        let simple = ok_stdout(&cluster.etcdctl(&[0, 1, 2], &["endpoint", "hashkv", &rev_flag]));
        let hashes: Vec<&str> = simple
            .lines()
            .zip([0, 1, 2])
            .map(|(line, slot)| {
                let (endpoint, hash) = line.split_once(", ").expect("`endpoint, hash`");
                assert_eq!(endpoint, cluster.member(slot).endpoint());
                assert!(hash.parse::<u32>().is_ok(), "hash {hash:?} is a u32");
                hash
            })
            .collect();
        assert_eq!(hashes.len(), 3, "{simple}");
        assert!(hashes.iter().all(|hash| *hash == hashes[0]), "{simple}");
    }
    let json = ok_stdout(&cluster.etcdctl(&[0, 1, 2], &["endpoint", "hashkv", "-w", "json"]));
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("JSON output");
    let entries = parsed.as_array().expect("one entry per endpoint");
    assert_eq!(entries.len(), 3);
    for entry in entries {
        let hash_kv = &entry["HashKV"];
        assert_eq!(hash_kv["compact_revision"], last_revision - 10, "{json}");
        assert_eq!(hash_kv["hash"], entries[0]["HashKV"]["hash"], "{json}");
        assert_eq!(hash_kv["header"]["revision"], last_revision, "{json}");
        assert!(entry["Endpoint"].is_string(), "{json}");
    }
}
