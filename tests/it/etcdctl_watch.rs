//! `etcdctl watch` (3.4) against a member: what it prints must equal what it prints against
//! etcd 3.4.23, byte for byte. Expected texts were captured from etcd 3.4.23 on loopback.
//!
//! etcdctl watch runs until killed, so each test runs it as a child process, writes over gRPC,
//! waits (bounded) until the expected number of bytes has been printed, kills it and compares
//! everything it printed. etcdctl prints nothing when a watch is created; a test without
//! `--rev` therefore first writes "probe" values to the watched key until one shows up, and
//! expects one or more probe events before the rest.

use std::time::Duration;

use mnemo::pb::etcdserverpb::kv_client::KvClient;
use mnemo::pb::etcdserverpb::request_op::Request;
use mnemo::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
use tonic::transport::Channel;

use crate::support::etcdctl_child::EtcdctlChild;
use crate::support::{Member, delete, put};

/// How long one probe write waits for its event to be printed before the next probe.
const PROBE_WAIT: Duration = Duration::from_millis(300);
/// Probe writes before giving up on the watch ever being created.
const PROBES_MAX: usize = 50;

/// Joins lines with a trailing newline each, the way etcdctl prints them.
fn lines(items: &[&str]) -> String {
    items.iter().map(|line| format!("{line}\n")).collect()
}

/// Puts `key` = "probe" until the watch prints its event; returns the probe event's text.
async fn probe(watcher: &mut EtcdctlChild, kv: &mut KvClient<Channel>, key: &str) -> String {
    let event = lines(&["PUT", key, "probe"]);
    for _ in 0..PROBES_MAX {
        put(kv, key, "probe").await;
        if watcher.wait_for_len(event.len(), PROBE_WAIT).await {
            return event;
        }
    }
    panic!(
        "etcdctl watch printed nothing after {PROBES_MAX} probe writes to {key:?}:\n{}",
        watcher.output()
    );
}

/// Checks that `printed` is one or more `probe` texts followed by exactly `rest`.
#[track_caller]
fn assert_probes_then(printed: &str, probe: &str, rest: &str) {
    let mut remaining = printed
        .strip_prefix(probe)
        .unwrap_or_else(|| panic!("no probe event first:\n{printed}"));
    while let Some(after) = remaining.strip_prefix(probe) {
        remaining = after;
    }
    assert_eq!(remaining, rest, "whole output:\n{printed}");
}

fn bytes<T: From<Vec<u8>>>(text: &str) -> T {
    text.as_bytes().to_vec().into()
}

async fn del(kv: &mut KvClient<Channel>, key: &str) {
    let request = DeleteRangeRequest {
        key: bytes(key),
        ..Default::default()
    };
    assert_eq!(delete(kv, request).await.deleted, 1, "delete {key}");
}

async fn txn_puts(kv: &mut KvClient<Channel>, pairs: &[(&str, &str)]) {
    let success = pairs
        .iter()
        .map(|(key, value)| RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: bytes(key),
                value: bytes(value),
                ..Default::default()
            })),
        })
        .collect();
    let request = TxnRequest {
        success,
        ..Default::default()
    };
    kv.txn(request).await.expect("txn");
}

/// `etcdctl watch KEY` prints each put as PUT, key, value and each delete as DELETE, key and
/// an empty value; other keys are not printed.
#[tokio::test]
async fn watch_a_key_prints_its_puts_and_deletes() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let mut watcher = EtcdctlChild::start(&member, &["watch", "a"]);
    let probe_event = probe(&mut watcher, &mut kv, "a").await;
    let probed = watcher.output().len();
    put(&mut kv, "a", "1").await;
    put(&mut kv, "ab", "not a").await;
    put(&mut kv, "b", "not a").await;
    put(&mut kv, "a", "2").await;
    del(&mut kv, "a").await;
    let expected = lines(&["PUT", "a", "1", "PUT", "a", "2", "DELETE", "a", ""]);
    watcher.expect_len(probed + expected.len()).await;
    assert_probes_then(&watcher.finish(), &probe_event, &expected);
}

/// `etcdctl watch --prefix P` prints the events of keys starting with P, a transaction's in
/// key order.
#[tokio::test]
async fn watch_prefix_prints_events_under_the_prefix() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let mut watcher = EtcdctlChild::start(&member, &["watch", "--prefix", "p"]);
    let probe_event = probe(&mut watcher, &mut kv, "p").await;
    let probed = watcher.output().len();
    put(&mut kv, "p1", "x").await;
    put(&mut kv, "q", "outside").await;
    put(&mut kv, "o", "outside").await;
    txn_puts(&mut kv, &[("pz", "z"), ("pa", "a")]).await;
    del(&mut kv, "p1").await;
    let expected = lines(&[
        "PUT", "p1", "x", "PUT", "pz", "z", "PUT", "pa", "a", "DELETE", "p1", "",
    ]);
    watcher.expect_len(probed + expected.len()).await;
    assert_probes_then(&watcher.finish(), &probe_event, &expected);
}

/// `etcdctl watch --rev N` replays from revision N, inclusive; with `--prev-kv` each update and
/// delete is preceded by the previous key and value. A range `watch A C` covers [A, C).
#[tokio::test]
async fn watch_rev_replays_history_with_and_without_prev_kv() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put(&mut kv, "a", "1").await; // 2
    put(&mut kv, "a", "2").await; // 3
    del(&mut kv, "a").await; // 4
    txn_puts(&mut kv, &[("k1", "x"), ("k2", "y")]).await; // 5
    put(&mut kv, "c", "end").await; // 6

    let mut watcher = EtcdctlChild::start(&member, &["watch", "--rev", "2", "--prev-kv", "a"]);
    let expected = lines(&[
        "PUT", "a", "1", "PUT", "a", "1", "a", "2", "DELETE", "a", "2", "a", "",
    ]);
    watcher.expect_len(expected.len()).await;
    assert_eq!(watcher.finish(), expected);

    let mut watcher = EtcdctlChild::start(&member, &["watch", "--rev", "3", "--prefix", "k"]);
    let expected = lines(&["PUT", "k1", "x", "PUT", "k2", "y"]);
    watcher.expect_len(expected.len()).await;
    assert_eq!(watcher.finish(), expected);

    let mut watcher = EtcdctlChild::start(&member, &["watch", "--rev", "1", "a", "c"]);
    let expected = lines(&["PUT", "a", "1", "PUT", "a", "2", "DELETE", "a", ""]);
    watcher.expect_len(expected.len()).await;
    // A live event after the replay, to show nothing else of the range was printed.
    put(&mut kv, "b", "live").await;
    let expected = expected + &lines(&["PUT", "b", "live"]);
    watcher.expect_len(expected.len()).await;
    assert_eq!(watcher.finish(), expected);
}

/// `etcdctl watch -i` reads `watch ...` and `progress` lines from stdin. `progress` asks the
/// server for a progress report, which etcdctl prints once per open watcher as
/// "progress notify: <revision>". (etcdctl 3.4's interactive mode has no cancel command.)
#[tokio::test]
async fn interactive_watch_takes_watch_and_progress_lines() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put(&mut kv, "x", "1").await; // 2
    let mut watcher = EtcdctlChild::start(&member, &["watch", "-i"]);
    let mut expected = String::new();

    // Each progress report also shows the watchers created before it are in place.
    watcher.send_line("watch a");
    watcher.send_line("progress");
    expected += &lines(&["progress notify: 2"]);
    watcher.expect_len(expected.len()).await;

    watcher.send_line("watch b --prefix");
    watcher.send_line("progress");
    expected += &lines(&["progress notify: 2", "progress notify: 2"]);
    watcher.expect_len(expected.len()).await;

    put(&mut kv, "a", "1").await; // 3
    expected += &lines(&["PUT", "a", "1"]);
    watcher.expect_len(expected.len()).await;
    put(&mut kv, "bb", "2").await; // 4
    expected += &lines(&["PUT", "bb", "2"]);
    watcher.expect_len(expected.len()).await;
    del(&mut kv, "a").await; // 5
    expected += &lines(&["DELETE", "a", ""]);
    watcher.expect_len(expected.len()).await;

    // A replaying watcher with prev_kv, from inside the session.
    watcher.send_line("watch --rev 3 --prev-kv a");
    expected += &lines(&["PUT", "a", "1", "DELETE", "a", "1", "a", ""]);
    watcher.expect_len(expected.len()).await;

    watcher.send_line("progress");
    expected += &lines(&[
        "progress notify: 5",
        "progress notify: 5",
        "progress notify: 5",
    ]);
    watcher.expect_len(expected.len()).await;
    assert_eq!(watcher.finish(), expected);
}
