//! Snapshots end to end: `etcdctl snapshot save` (the real etcdctl 3.4) against a loaded
//! 3-member cluster, `snapshot status` on the file, `snapshot restore` into three new data
//! dirs, and the restored cluster answering every range like the original, with its leases,
//! its revision and compact revision, a new cluster id, and working writes. Damaged copies of
//! the file are refused.
//!
//! With `MNEMO_IT_SERVER=/usr/bin/etcd` the same test runs against etcd 3.4, with etcdctl's own
//! `snapshot status` / `snapshot restore` in place of mnemo's, which shows the expectations
//! are etcd's. Only the promise that a refused restore leaves no data dir behind is ours alone:
//! etcd 3.4 leaves a partly built one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mnemo::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use mnemo::pb::etcdserverpb::lease_client::LeaseClient;
use mnemo::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use mnemo::pb::etcdserverpb::request_op::Request as Op;
use mnemo::pb::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseLeasesRequest, PutRequest, RangeRequest,
    RangeResponse, RequestOp, SnapshotRequest, TxnRequest,
};
use mnemo::pb::mvccpb::KeyValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::cluster::{Cluster, ELECTION_TIMEOUT, HEARTBEAT_INTERVAL};
use crate::support::lease::grant;
use crate::support::{
    ClusterFlags, Member, RPC_TIMEOUT, etcdctl_path, ok_stdout, stderr_of, stdout_of, testing_mnemo,
};

/// Keys written in bulk (in txns of [`BULK_TXN_OPS`] puts).
const BULK_KEYS: usize = 3_000;
/// Puts per bulk txn (within etcd's 128-op limit).
const BULK_TXN_OPS: usize = 100;
/// Keys overwritten one put at a time, before and after the compaction.
const OVERWRITES: usize = 300;
/// Keys deleted one at a time.
const DELETES: usize = 150;
/// Leases with keys attached, and keys per lease.
const LEASES: usize = 3;
const KEYS_PER_LEASE: usize = 4;
/// TTL of the test's leases: far longer than the test, so none expires on either cluster.
const LEASE_TTL_SECS: i64 = 3_600;
/// Members of both clusters.
const MEMBERS: usize = 3;

/// The tool that reads snapshot files: `mnemo snapshot` for mnemo, etcdctl 3.4's
/// `snapshot` for etcd.
fn snapshot_tool(args: &[&str]) -> Output {
    let mut command = if testing_mnemo() {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mnemo"));
        command.arg("snapshot");
        command
    } else {
        let mut command = Command::new(etcdctl_path());
        command.env("ETCDCTL_API", "3").arg("snapshot");
        command
    };
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run the snapshot tool")
}

fn put_op(key: String, value: String, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: key.into_bytes().into(),
            value: value.into_bytes().into(),
            lease,
            ..Default::default()
        })),
    }
}

/// Writes the load through slot 0: bulk keys, overwrites, deletes, leased keys, a compaction
/// in the middle and more overwrites after it. Returns (lease ids, compact revision).
async fn load(cluster: &Cluster) -> (Vec<i64>, i64) {
    let mut kv = cluster.kv(0, RPC_TIMEOUT);
    for chunk in 0..BULK_KEYS / BULK_TXN_OPS {
        let success = (0..BULK_TXN_OPS)
            .map(|offset| {
                let index = chunk * BULK_TXN_OPS + offset;
                put_op(format!("bulk/{index:05}"), format!("first-{index}"), 0)
            })
            .collect();
        // An always-true compare, so the puts are one txn at one revision.
        let compare = Compare {
            result: CompareResult::Greater as i32,
            target: CompareTarget::Create as i32,
            key: b"bulk/".to_vec().into(),
            target_union: Some(TargetUnion::CreateRevision(-1)),
            ..Default::default()
        };
        let response = kv
            .txn(TxnRequest {
                compare: vec![compare],
                success,
                failure: Vec::new(),
            })
            .await
            .expect("bulk txn")
            .into_inner();
        assert!(response.succeeded);
    }
    let overwrite = |index: usize, round: &str| PutRequest {
        key: format!("bulk/{:05}", index * 7 % BULK_KEYS)
            .into_bytes()
            .into(),
        value: format!("{round}-{index}").into_bytes().into(),
        ..Default::default()
    };
    for index in 0..OVERWRITES / 2 {
        kv.put(overwrite(index, "second")).await.expect("overwrite");
    }
    for index in 0..DELETES {
        let request = DeleteRangeRequest {
            key: format!("bulk/{:05}", 1 + index * 11 % BULK_KEYS)
                .into_bytes()
                .into(),
            ..Default::default()
        };
        kv.delete_range(request).await.expect("delete");
    }
    let mut lease = LeaseClient::new(cluster.member(0).lazy_channel(RPC_TIMEOUT));
    let mut lease_ids = Vec::new();
    for index in 0..LEASES {
        let id = grant(&mut lease, LEASE_TTL_SECS, 0).await.id;
        lease_ids.push(id);
        for key in 0..KEYS_PER_LEASE {
            let request = PutRequest {
                key: format!("leased/{index}/{key}").into_bytes().into(),
                value: b"held".to_vec().into(),
                lease: id,
                ..Default::default()
            };
            kv.put(request).await.expect("leased put");
        }
    }
    // A lease with no key travels too.
    lease_ids.push(grant(&mut lease, LEASE_TTL_SECS, 0).await.id);
    let compact_revision = kv
        .range(RangeRequest {
            key: b"bulk/00000".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("read the revision")
        .into_inner()
        .header
        .expect("header")
        .revision
        - 20;
    kv.compact(CompactionRequest {
        revision: compact_revision,
        physical: true,
    })
    .await
    .expect("compact");
    for index in OVERWRITES / 2..OVERWRITES {
        kv.put(overwrite(index, "third")).await.expect("overwrite");
    }
    lease_ids.sort_unstable();
    (lease_ids, compact_revision)
}

/// What a restored cluster must answer exactly like the original.
#[derive(Debug, PartialEq)]
struct Observed {
    revision: i64,
    kvs: Vec<KeyValue>,
    leases: Vec<i64>,
    /// Versions of one overwritten key at the compact revision (still readable).
    at_compact_revision: Vec<KeyValue>,
}

async fn observe(member: &Member, compact_revision: i64) -> (Observed, u64) {
    let mut kv = member.kv().await;
    let all = |revision| RangeRequest {
        key: vec![0].into(),
        range_end: vec![0].into(),
        revision,
        ..Default::default()
    };
    let response: RangeResponse = kv.range(all(0)).await.expect("range all").into_inner();
    let header = response.header.expect("range header");
    let at_compact_revision = kv
        .range(RangeRequest {
            key: b"bulk/".to_vec().into(),
            range_end: b"bulk0".to_vec().into(),
            revision: compact_revision,
            limit: 50,
            ..Default::default()
        })
        .await
        .expect("range at the compact revision")
        .into_inner()
        .kvs;
    let mut leases: Vec<i64> = LeaseClient::new(member.channel().await)
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("lease list")
        .into_inner()
        .leases
        .into_iter()
        .map(|lease| lease.id)
        .collect();
    leases.sort_unstable();
    let observed = Observed {
        revision: header.revision,
        kvs: response.kvs,
        leases,
        at_compact_revision,
    };
    (observed, header.cluster_id)
}

/// Asserts a restore of `file` into `data_dir` is refused and, for mnemo, leaves nothing.
fn assert_restore_refused(file: &Path, data_dir: &Path, expected: &str) {
    let output = snapshot_tool(&[
        "restore",
        file.to_str().expect("UTF-8 path"),
        "--data-dir",
        data_dir.to_str().expect("UTF-8 path"),
    ]);
    assert!(
        !output.status.success(),
        "a restore of {} succeeded:\n{}",
        file.display(),
        stdout_of(&output)
    );
    if testing_mnemo() {
        let stderr = stderr_of(&output);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!data_dir.exists(), "{} was left behind", data_dir.display());
        let parent = data_dir.parent().expect("a parent");
        let leftovers: Vec<PathBuf> = std::fs::read_dir(parent)
            .expect("list the parent")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.to_string_lossy().contains("restoring"))
            .collect();
        assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_restored_into_a_new_cluster_answers_like_the_original() {
    let cluster = Cluster::start(MEMBERS).await;
    let (lease_ids, compact_revision) = load(&cluster).await;
    let files = tempfile::tempdir().expect("temp dir");
    let file = files.path().join("snapshot.db");
    let file_text = file.to_str().expect("UTF-8 path");

    // A follower's snapshot is as good as the leader's.
    let saved = cluster.etcdctl(&[1], &["snapshot", "save", file_text]);
    assert_eq!(
        ok_stdout(&saved),
        format!("Snapshot saved at {file_text}\n")
    );
    assert!(
        stderr_of(&saved).contains("fetched snapshot"),
        "{}",
        stderr_of(&saved)
    );
    let file_bytes = std::fs::metadata(&file).expect("the saved file").len();
    assert_eq!(file_bytes % 512, 32, "{file_bytes} bytes");
    // Nothing was written since the load, so any member shows the snapshot's state.
    let (original, original_cluster_id) = observe(cluster.member(1), compact_revision).await;
    assert!(
        original.kvs.len() > BULK_KEYS - DELETES,
        "{}",
        original.kvs.len()
    );
    assert_eq!(original.leases, lease_ids);
    eprintln!(
        "snapshot: {file_bytes} bytes, {} keys, revision {}",
        original.kvs.len(),
        original.revision
    );

    let status = snapshot_tool(&["status", file_text, "-w", "json"]);
    let status: Value = serde_json::from_str(&ok_stdout(&status)).expect("status JSON");
    assert_eq!(status["revision"], original.revision, "{status}");
    let total_size = status["totalSize"].as_u64().expect("totalSize");
    assert!(
        (file_bytes - 32..=file_bytes).contains(&total_size),
        "{status}"
    );
    let total_keys = status["totalKey"].as_u64().expect("totalKey");
    assert!(total_keys >= original.kvs.len() as u64, "{status}");
    assert!(status["hash"].as_u64().is_some(), "{status}");
    let simple = ok_stdout(&snapshot_tool(&["status", file_text]));
    assert!(
        simple.starts_with(&format!(
            "{:x}, {}, ",
            status["hash"].as_u64().unwrap_or(0),
            original.revision
        )),
        "{simple}"
    );

    // Damaged copies are refused.
    let bytes = std::fs::read(&file).expect("read the snapshot");
    let flipped = files.path().join("flipped.db");
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    std::fs::write(&flipped, &damaged).expect("write the flipped copy");
    assert_restore_refused(&flipped, &files.path().join("from-flipped"), "sha256");
    if testing_mnemo() {
        // Ours checks the hash for status too (etcd's reads the bbolt file as it is).
        let status = snapshot_tool(&["status", flipped.to_str().expect("UTF-8 path")]);
        assert!(!status.status.success());
        assert!(
            stderr_of(&status).contains("corrupted"),
            "{}",
            stderr_of(&status)
        );
    }
    let truncated = files.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1000]).expect("write the truncated copy");
    assert_restore_refused(
        &truncated,
        &files.path().join("from-truncated"),
        "truncated",
    );

    // Restore into three new members on fresh ports, as a new cluster.
    let mut members: Vec<Member> = (0..MEMBERS)
        .map(|slot| Member::unstarted(&format!("restored{slot}"), None))
        .collect();
    for member in &mut members {
        let picked = (0..3).any(|_| member.pick_ports());
        assert!(picked, "no two distinct free ports");
    }
    let initial_cluster = members
        .iter()
        .map(|member| format!("{}={}", member.name(), member.peer_url()))
        .collect::<Vec<_>>()
        .join(",");
    let token = format!("restored-{}", members[0].peer_port());
    for member in &mut members {
        let data_dir = member.data_dir();
        let output = snapshot_tool(&[
            "restore",
            file_text,
            "--data-dir",
            data_dir.to_str().expect("UTF-8 path"),
            "--name",
            member.name(),
            "--initial-cluster",
            &initial_cluster,
            "--initial-cluster-token",
            &token,
            "--initial-advertise-peer-urls",
            &member.peer_url(),
        ]);
        assert!(
            output.status.success(),
            "restore failed:\n{}\n{}",
            stdout_of(&output),
            stderr_of(&output)
        );
        assert!(data_dir.is_dir());
        // A second restore into the same dir is refused, and leaves the first alone.
        let again = snapshot_tool(&[
            "restore",
            file_text,
            "--data-dir",
            data_dir.to_str().expect("UTF-8 path"),
            "--name",
            member.name(),
            "--initial-cluster",
            &initial_cluster,
            "--initial-cluster-token",
            &token,
            "--initial-advertise-peer-urls",
            &member.peer_url(),
        ]);
        assert!(!again.status.success());
        assert!(
            stderr_of(&again).contains("exists"),
            "{}",
            stderr_of(&again)
        );
        member.set_cluster(ClusterFlags {
            advertise_peer_url: member.peer_url(),
            initial_cluster: initial_cluster.clone(),
            state: "new",
            token: token.clone(),
            extra_args: vec![
                "--heartbeat-interval".into(),
                HEARTBEAT_INTERVAL.as_millis().to_string(),
                "--election-timeout".into(),
                ELECTION_TIMEOUT.as_millis().to_string(),
            ],
        });
    }
    drop(cluster);
    for member in &mut members {
        member.spawn();
    }
    for member in &mut members {
        if let Err(why) = member.wait_ready().await {
            panic!(
                "{} did not start: {why}\n{}",
                member.name(),
                member.log_tail()
            );
        }
    }

    for member in &members {
        let (restored, cluster_id) = observe(member, compact_revision).await;
        assert_ne!(cluster_id, original_cluster_id, "{}", member.name());
        // One assertion per part, so a failure says which part differs.
        assert_eq!(restored.revision, original.revision, "{}", member.name());
        assert_eq!(restored.leases, original.leases, "{}", member.name());
        assert_eq!(
            restored.at_compact_revision,
            original.at_compact_revision,
            "{}",
            member.name()
        );
        assert_eq!(restored.kvs.len(), original.kvs.len(), "{}", member.name());
        assert!(
            restored.kvs == original.kvs,
            "{}: the keys differ",
            member.name()
        );
        // History below the compact revision is gone, as on the original.
        let below = member
            .kv()
            .await
            .range(RangeRequest {
                key: b"bulk/00000".to_vec().into(),
                revision: compact_revision - 1,
                ..Default::default()
            })
            .await
            .expect_err("a read below the compact revision");
        assert_eq!(below.code(), tonic::Code::OutOfRange, "{below:?}");
    }

    // Writes work, and continue the original's revisions.
    let mut kv = members[2].kv().await;
    let response = kv
        .put(PutRequest {
            key: b"after-restore".to_vec().into(),
            value: b"written".to_vec().into(),
            lease: lease_ids[0],
            ..Default::default()
        })
        .await
        .expect("a put on the restored cluster")
        .into_inner();
    assert_eq!(
        response.header.expect("header").revision,
        original.revision + 1
    );
    let mut reader = members[0].kv().await;
    let read = reader
        .range(RangeRequest {
            key: b"after-restore".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("read it back")
        .into_inner();
    assert_eq!(read.kvs.len(), 1);
    assert_eq!(read.kvs[0].lease, lease_ids[0]);
}

/// Values of the stalled-stream test: large, so the stream outgrows every buffer between the
/// producer and the client (the channel, HTTP/2 windows, socket buffers) many times over.
const STALL_VALUE_BYTES: usize = 64 * 1024;
/// Keys of the stalled-stream test (about 16 MiB of snapshot).
const STALL_KEYS: usize = 256;
/// Writes made while the snapshot stream stalls.
const STALL_WRITES: usize = 50;
/// How long one of those writes may take: far less than a stall that blocked apply would
/// cause (it would never finish).
const STALL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_snapshot_stream_does_not_hold_up_writes_and_stays_point_in_time() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    for index in 0..STALL_KEYS {
        let request = PutRequest {
            key: format!("big/{index:04}").into_bytes().into(),
            value: vec![b'x'; STALL_VALUE_BYTES].into(),
            ..Default::default()
        };
        kv.put(request).await.expect("load put");
    }
    let before = kv
        .range(RangeRequest {
            key: b"big/0000".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("read the revision")
        .into_inner()
        .header
        .expect("header")
        .revision;

    let mut maintenance = MaintenanceClient::new(member.channel().await);
    let mut stream = maintenance
        .snapshot(SnapshotRequest {})
        .await
        .expect("open the snapshot stream")
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("first chunk")
        .expect("a first chunk");
    let total = first.remaining_bytes + first.blob.len() as u64;
    assert!(total > (STALL_KEYS * STALL_VALUE_BYTES) as u64, "{total}");
    assert!(first.header.is_none(), "snapshot chunks carry no header");

    // The client reads nothing more for now; writes go on.
    for index in 0..STALL_WRITES {
        let request = PutRequest {
            key: format!("during/{index}").into_bytes().into(),
            value: b"v".to_vec().into(),
            ..Default::default()
        };
        tokio::time::timeout(STALL_WRITE_TIMEOUT, kv.put(request))
            .await
            .unwrap_or_else(|_| panic!("put {index} waited on the stalled snapshot"))
            .expect("put during the snapshot");
    }

    let mut data = first.blob.to_vec();
    let mut trailer = None;
    let mut messages = 1;
    while let Some(message) = stream.message().await.expect("a chunk") {
        messages += 1;
        assert!(
            messages <= total as usize / 1024 + 2,
            "more messages than the data can fill"
        );
        if message.remaining_bytes == 0 && message.blob.len() == 32 && data.len() as u64 == total {
            trailer = Some(message.blob.to_vec());
        } else {
            assert_eq!(
                message.remaining_bytes + data.len() as u64 + message.blob.len() as u64,
                total
            );
            data.extend_from_slice(&message.blob);
        }
    }
    let trailer = trailer.expect("the SHA-256 message");
    assert_eq!(data.len() as u64, total);
    assert_eq!(total % 512, 0);
    let digest: [u8; 32] = Sha256::digest(&data).into();
    assert_eq!(trailer, digest);
    if testing_mnemo() {
        // The snapshot is of the moment it was asked for: its header carries that revision.
        let mut revision = [0u8; 8];
        revision.copy_from_slice(&data[12..20]);
        assert_eq!(i64::from_be_bytes(revision), before);
    }
}
