//! Operations: `/metrics` in Prometheus's text format (on the client port and on
//! `--listen-metrics-urls`) under etcd's metric names, moving as a member serves load and as a
//! cluster loses its leader; and the logs: `--log-format json` lines, the member name on every
//! line, the slow-request warning, and refusals of bad values for these flags.
//!
//! The metric checks hold against etcd 3.4 too (`MNEMO_IT_SERVER=/usr/bin/etcd`), except the
//! `mnemo_*` metrics; the log checks are mnemo's own (etcd 3.4 has no `--log-format` and no
//! `--experimental-warning-apply-duration`).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use mnemo::pb::etcdserverpb::RangeRequest;
use mnemo::pb::etcdserverpb::lease_client::LeaseClient;
use prometheus_parse::{Scrape, Value};

use crate::support::cluster::Cluster;
use crate::support::lease::{KeepAliveStream, PrefixWatch, grant, revoke};
use crate::support::{Member, free_port, http_get, poll_until, put, testing_mnemo};

/// Puts of the load test: enough that a count off by one cannot pass for a right one.
const LOAD_PUTS: usize = 20;
/// Linearizable ranges of the load test.
const LOAD_RANGES: usize = 7;
/// How long a metric may take to reflect what a test did (etcd commits its backend every
/// 100 ms, so its backend commit histogram trails the writes).
const METRIC_SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of one gRPC call in these tests.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// etcd's metrics that operators alert on, every one of which mnemo serves too.
const ETCD_METRICS: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_is_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_failed_total",
    "etcd_server_slow_apply_total",
    "etcd_server_id",
    "etcd_server_version",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_mvcc_put_total",
    "etcd_mvcc_range_total",
    "etcd_mvcc_delete_total",
    "etcd_mvcc_txn_total",
    "etcd_disk_wal_fsync_duration_seconds",
    "etcd_disk_backend_commit_duration_seconds",
    "etcd_debugging_mvcc_watch_stream_total",
    "etcd_debugging_mvcc_watcher_total",
    "etcd_debugging_mvcc_slow_watcher_total",
    "etcd_debugging_lease_granted_total",
    "etcd_debugging_lease_revoked_total",
    "etcd_debugging_lease_renewed_total",
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "grpc_server_msg_received_total",
    "grpc_server_msg_sent_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
];

/// mnemo's own metrics.
const MNEMO_METRICS: &[&str] = &["mnemo_wal_group_commit_entries", "mnemo_apply_lag_entries"];

/// One scrape, parsed by a Prometheus text parser.
struct Metrics(Scrape);

impl Metrics {
    /// Fetches and parses `/metrics` at `addr`; panics when it is not served or not valid.
    async fn scrape(addr: SocketAddr) -> Metrics {
        let response = http_get(addr, "/metrics").await.expect("GET /metrics");
        assert_eq!(response.status, 200, "{response:?}");
        let content_type = response.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("text/plain"),
            "content-type {content_type:?}"
        );
        let text = response.body_text();
        let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
            .unwrap_or_else(|err| panic!("/metrics does not parse ({err}):\n{text}"));
        assert!(!scrape.samples.is_empty(), "/metrics has no samples");
        Metrics(scrape)
    }

    fn has(&self, name: &str) -> bool {
        self.0.samples.iter().any(|sample| sample.metric == name)
    }

    /// The value of the series of `name` whose labels include `labels` (a histogram's
    /// observation count), summed over matching series; 0 when none matches, as Prometheus
    /// reads a series that does not exist yet.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .samples
            .iter()
            .filter(|sample| sample.metric == name)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(label, value)| sample.labels.get(label) == Some(*value))
            })
            .map(|sample| match &sample.value {
                Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => *value,
                Value::Histogram(buckets) => buckets
                    .iter()
                    .find(|bucket| bucket.less_than.is_infinite())
                    .map_or(0.0, |bucket| bucket.count),
                Value::Summary(_) => panic!("{name} is a summary"),
            })
            .sum()
    }

    /// Whether `name` is a histogram (its buckets were parsed as one).
    fn is_histogram(&self, name: &str) -> bool {
        self.0
            .samples
            .iter()
            .any(|sample| sample.metric == name && matches!(sample.value, Value::Histogram(_)))
    }
}

/// The labels of one gRPC method's series.
fn grpc<'a>(service: &'a str, method: &'a str, kind: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grpc_service", service),
        ("grpc_method", method),
        ("grpc_type", kind),
    ]
}

/// Every listed metric is served, parses, and has the type etcd gives it; the member's state
/// (one leader, itself) shows.
#[tokio::test]
async fn metrics_parse_and_name_every_metric_operators_alert_on() {
    let member = Member::start().await;
    let metrics = Metrics::scrape(member.client_addr()).await;
    let mut expected: Vec<&str> = ETCD_METRICS.to_vec();
    if testing_mnemo() {
        expected.extend(MNEMO_METRICS);
    }
    // The gRPC series exist from the start, at zero, for methods never called.
    let missing: Vec<&&str> = expected.iter().filter(|name| !metrics.has(name)).collect();
    assert!(missing.is_empty(), "/metrics lacks {missing:?}");
    let never_called = grpc("etcdserverpb.Maintenance", "Defragment", "unary");
    let mut never_called_ok = never_called.clone();
    never_called_ok.push(("grpc_code", "OK"));
    assert!(
        metrics
            .0
            .samples
            .iter()
            .any(|sample| sample.metric == "grpc_server_handled_total"
                && never_called_ok
                    .iter()
                    .all(|(label, value)| sample.labels.get(label) == Some(*value))),
        "a series for a method never called"
    );
    assert_eq!(
        metrics.value("grpc_server_started_total", &never_called),
        0.0
    );
    for histogram in [
        "etcd_disk_wal_fsync_duration_seconds",
        "etcd_disk_backend_commit_duration_seconds",
    ] {
        assert!(
            metrics.is_histogram(histogram),
            "{histogram} is a histogram"
        );
    }
    assert_eq!(metrics.value("etcd_server_has_leader", &[]), 1.0);
    assert_eq!(metrics.value("etcd_server_is_leader", &[]), 1.0);
    assert!(metrics.value("etcd_server_leader_changes_seen_total", &[]) >= 1.0);
    assert_eq!(metrics.value("etcd_server_id", &[]), 1.0, "one id series");
    assert!(metrics.value("etcd_mvcc_db_total_size_in_bytes", &[]) > 0.0);
}

/// Under a load of puts, ranges, a failing range, a watch and a lease grant, each counter
/// moves by what was done; `--listen-metrics-urls` serves the same metrics and `/health`.
#[tokio::test]
async fn metrics_move_under_load_and_the_metrics_url_serves_them() {
    let metrics_port = free_port();
    let metrics_url = format!("http://127.0.0.1:{metrics_port}");
    let member = Member::start_with_flags("infra0", &["--listen-metrics-urls", &metrics_url]).await;
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let health = http_get(metrics_addr, "/health")
        .await
        .expect("GET /health");
    assert_eq!(health.status, 200, "{health:?}");
    assert!(
        health.body_text().contains("\"health\":\"true\""),
        "{health:?}"
    );

    let before = Metrics::scrape(metrics_addr).await;
    let mut kv = member.kv().await;
    for index in 0..LOAD_PUTS {
        put(&mut kv, &format!("load/{index}"), "value").await;
    }
    for _ in 0..LOAD_RANGES {
        kv.range(RangeRequest {
            key: b"load/0".to_vec().into(),
            ..RangeRequest::default()
        })
        .await
        .expect("range");
    }
    // A range at a future revision fails with OutOfRange.
    let future = kv
        .range(RangeRequest {
            key: b"load/0".to_vec().into(),
            revision: 1_000_000,
            ..RangeRequest::default()
        })
        .await
        .expect_err("a range at a future revision fails");
    assert_eq!(future.code(), tonic::Code::OutOfRange, "{future:?}");
    let watch = PrefixWatch::open(member.channel().await, "load/", 0, CALL_TIMEOUT).await;
    let mut lease = LeaseClient::new(member.channel().await);
    let kept = grant(&mut lease, 60, 0).await.id;
    let mut keepalive = KeepAliveStream::open(member.channel().await);
    let renewed = keepalive
        .keep_alive(kept, CALL_TIMEOUT)
        .await
        .expect("a keepalive");
    assert_eq!(renewed.ttl, 60, "{renewed:?}");
    drop(keepalive);
    let revoked = grant(&mut lease, 60, 0).await.id;
    revoke(&mut lease, revoked).await;

    let grown = |after: &Metrics, name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    // etcd commits its backend on a timer: wait until the writes' commits were counted.
    let after = poll_until(
        "the backend commits of the load to be counted",
        METRIC_SETTLE_TIMEOUT,
        || async {
            let after = Metrics::scrape(member.client_addr()).await;
            (grown(&after, "etcd_disk_backend_commit_duration_seconds", &[]) >= 1.0)
                .then_some(after)
        },
    )
    .await;
    let puts = LOAD_PUTS as f64;
    assert!(
        grown(&after, "etcd_server_proposals_committed_total", &[]) >= puts + 3.0,
        "every put, both grants and the revoke were committed"
    );
    assert!(grown(&after, "etcd_server_proposals_applied_total", &[]) >= puts + 3.0);
    assert_eq!(after.value("etcd_server_proposals_pending", &[]), 0.0);
    assert_eq!(
        grown(&after, "etcd_server_proposals_failed_total", &[]),
        0.0
    );
    assert_eq!(grown(&after, "etcd_mvcc_put_total", &[]), puts);
    assert!(grown(&after, "etcd_mvcc_range_total", &[]) >= LOAD_RANGES as f64);
    assert!(grown(&after, "etcd_disk_wal_fsync_duration_seconds", &[]) >= 1.0);
    assert_eq!(
        grown(&after, "etcd_debugging_lease_granted_total", &[]),
        2.0
    );
    assert_eq!(
        grown(&after, "etcd_debugging_lease_renewed_total", &[]),
        1.0
    );
    assert_eq!(
        grown(&after, "etcd_debugging_lease_revoked_total", &[]),
        1.0
    );
    assert_eq!(
        after.value("etcd_debugging_mvcc_watch_stream_total", &[]),
        1.0
    );
    assert_eq!(after.value("etcd_debugging_mvcc_watcher_total", &[]), 1.0);

    let put_calls = grpc("etcdserverpb.KV", "Put", "unary");
    assert_eq!(grown(&after, "grpc_server_started_total", &put_calls), puts);
    assert_eq!(
        grown(&after, "grpc_server_msg_received_total", &put_calls),
        puts
    );
    assert_eq!(
        grown(&after, "grpc_server_msg_sent_total", &put_calls),
        puts
    );
    let mut put_ok = put_calls.clone();
    put_ok.push(("grpc_code", "OK"));
    assert_eq!(grown(&after, "grpc_server_handled_total", &put_ok), puts);
    let range_calls = grpc("etcdserverpb.KV", "Range", "unary");
    let mut range_ok = range_calls.clone();
    range_ok.push(("grpc_code", "OK"));
    let mut range_out_of_range = range_calls.clone();
    range_out_of_range.push(("grpc_code", "OutOfRange"));
    assert_eq!(
        grown(&after, "grpc_server_handled_total", &range_ok),
        LOAD_RANGES as f64
    );
    assert_eq!(
        grown(&after, "grpc_server_handled_total", &range_out_of_range),
        1.0
    );
    let watch_calls = grpc("etcdserverpb.Watch", "Watch", "bidi_stream");
    assert_eq!(
        grown(&after, "grpc_server_started_total", &watch_calls),
        1.0
    );
    assert_eq!(
        grown(&after, "grpc_server_msg_received_total", &watch_calls),
        1.0,
        "the create request"
    );
    assert!(
        grown(&after, "grpc_server_msg_sent_total", &watch_calls) >= 1.0,
        "the created response"
    );
    assert_eq!(
        grown(&after, "grpc_server_handled_total", &watch_calls),
        0.0,
        "the watch is still open"
    );
    let grant_calls = grpc("etcdserverpb.Lease", "LeaseGrant", "unary");
    assert_eq!(
        grown(&after, "grpc_server_started_total", &grant_calls),
        2.0
    );
    let keepalive_calls = grpc("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream");
    assert_eq!(
        grown(&after, "grpc_server_started_total", &keepalive_calls),
        1.0
    );
    assert_eq!(
        grown(&after, "grpc_server_msg_received_total", &keepalive_calls),
        1.0
    );
    assert_eq!(
        grown(&after, "grpc_server_msg_sent_total", &keepalive_calls),
        1.0
    );
    if testing_mnemo() {
        assert!(grown(&after, "mnemo_wal_group_commit_entries", &[]) >= 1.0);
    }

    // The metrics URL serves the same registry.
    let on_metrics_url = Metrics::scrape(metrics_addr).await;
    assert!(
        on_metrics_url.value("grpc_server_handled_total", &put_ok)
            >= after.value("grpc_server_handled_total", &put_ok)
    );
    drop(watch);
    // Once the stream is gone the watch gauges fall back.
    poll_until(
        "the watch gauges to fall to zero",
        METRIC_SETTLE_TIMEOUT,
        || async {
            let now = Metrics::scrape(member.client_addr()).await;
            (now.value("etcd_debugging_mvcc_watch_stream_total", &[]) == 0.0
                && now.value("etcd_debugging_mvcc_watcher_total", &[]) == 0.0)
                .then_some(())
        },
    )
    .await;
}

/// Scrapes each `(slot, address)` in turn.
async fn scrape_each(addrs: &[(usize, SocketAddr)]) -> Vec<(usize, Metrics)> {
    let mut scrapes = Vec::new();
    for &(slot, addr) in addrs {
        scrapes.push((slot, Metrics::scrape(addr).await));
    }
    scrapes
}

/// In a three-member cluster every member reports the leader and exactly one reports leading;
/// after the leader is killed the survivors report the new one and count the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_metrics_follow_a_leader_kill() {
    let mut cluster = Cluster::start(3).await;
    let all = [0, 1, 2];
    let leader = cluster.wait_leader(&all).await;
    let addrs: Vec<(usize, SocketAddr)> = all
        .iter()
        .map(|&slot| (slot, cluster.member(slot).client_addr()))
        .collect();
    let before = scrape_each(&addrs).await;
    for (slot, metrics) in &before {
        assert_eq!(
            metrics.value("etcd_server_has_leader", &[]),
            1.0,
            "slot {slot}"
        );
        assert_eq!(
            metrics.value("etcd_server_is_leader", &[]),
            if *slot == leader { 1.0 } else { 0.0 },
            "slot {slot}"
        );
    }
    cluster.kill9(leader);
    let survivors: Vec<usize> = all.iter().copied().filter(|&slot| slot != leader).collect();
    let survivor_addrs: Vec<(usize, SocketAddr)> = addrs
        .iter()
        .copied()
        .filter(|(slot, _)| *slot != leader)
        .collect();
    let new_leader = cluster.wait_leader(&survivors).await;
    let after = poll_until(
        "the survivors' metrics to show the new leader",
        METRIC_SETTLE_TIMEOUT,
        || async {
            let scrapes = scrape_each(&survivor_addrs).await;
            let settled = scrapes.iter().all(|(slot, metrics)| {
                metrics.value("etcd_server_has_leader", &[]) == 1.0
                    && metrics.value("etcd_server_is_leader", &[])
                        == if *slot == new_leader { 1.0 } else { 0.0 }
            });
            settled.then_some(scrapes)
        },
    )
    .await;
    for (slot, metrics) in &after {
        let (_, earlier) = before
            .iter()
            .find(|(earlier_slot, _)| earlier_slot == slot)
            .expect("scraped before");
        let changes = metrics.value("etcd_server_leader_changes_seen_total", &[]);
        let changes_before = earlier.value("etcd_server_leader_changes_seen_total", &[]);
        assert!(
            changes > changes_before,
            "slot {slot} saw the leader change: {changes_before} then {changes}"
        );
        // mnemo logs the change with the new leader's id and the term (etcd 3.4's raft
        // lines have their own shape).
        if testing_mnemo() {
            let log = cluster.member(*slot).log_text();
            let wanted = format!("leader={}", cluster.hex_id(new_leader));
            assert!(
                log.lines().any(|line| line.contains("leader changed")
                    && line.contains(&wanted)
                    && line.contains(" term=")),
                "slot {slot} logs the change to {wanted}:\n{log}"
            );
        }
    }
}

/// Runs the member binary with `args` in a fresh directory and returns its exit code and
/// standard error (the refusals happen before anything starts).
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_mnemo"))
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run mnemo");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Bad values of the log and metrics flags are refused at once, naming the flag.
#[test]
fn bad_log_and_metrics_flag_values_are_refused_naming_the_flag() {
    for (args, flag) in [
        (&["--log-format", "yaml"][..], "--log-format"),
        (&["--log-level", "verbose"][..], "--log-level"),
        (
            &["--experimental-warning-apply-duration", "soon"][..],
            "--experimental-warning-apply-duration",
        ),
        (
            &["--listen-metrics-urls", "127.0.0.1:2381"][..],
            "--listen-metrics-urls",
        ),
        (
            &["--listen-metrics-urls", "ftp://127.0.0.1:2381"][..],
            "--listen-metrics-urls",
        ),
    ] {
        let (code, stderr) = refused(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?} names {flag}: {stderr}");
    }
}

/// With `--log-format json` every line the member writes is a JSON object carrying the member
/// name, a level and a message; the leader change is logged with its term and member ids.
#[tokio::test]
async fn json_logs_are_json_lines_with_the_member_name() {
    if !testing_mnemo() {
        eprintln!("mnemo's own flags; nothing to check against another server");
        return;
    }
    let mut member = Member::start_with_flags("infra-json", &["--log-format", "json"]).await;
    let mut kv = member.kv().await;
    put(&mut kv, "k", "v").await;
    member.terminate().await;
    let log = member.log_text();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "the member logged: {log}");
    let mut leader_changes = 0;
    for line in &lines {
        let object: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("a log line is not JSON ({err}): {line}"));
        assert_eq!(object["member_name"], "infra-json", "{line}");
        assert!(object["level"].is_string(), "{line}");
        assert!(object["ts"].is_string(), "{line}");
        assert!(object["msg"].is_string(), "{line}");
        if object["msg"] == "leader changed" {
            leader_changes += 1;
            assert!(
                object["term"].as_u64().is_some_and(|term| term >= 1),
                "{line}"
            );
            assert!(object["leader"].is_string(), "{line}");
            assert!(object["member_id"].is_string(), "{line}");
        }
    }
    assert_eq!(leader_changes, 1, "one election logged: {log}");
}

/// A request slower than `--experimental-warning-apply-duration` is logged with how long it
/// took, the threshold and a summary naming the key but never the value; it is counted in
/// `etcd_server_slow_apply_total`. The default threshold (100 ms) keeps a quick put quiet.
#[tokio::test]
async fn slow_requests_are_warned_about_without_their_values() {
    if !testing_mnemo() {
        eprintln!("mnemo's own flags; nothing to check against another server");
        return;
    }
    let secret = "value-that-must-not-be-logged";
    let mut quiet = Member::start_named("quiet").await;
    let mut kv = quiet.kv().await;
    put(&mut kv, "quiet-key", secret).await;
    let quiet_metrics = Metrics::scrape(quiet.client_addr()).await;
    quiet.terminate().await;
    assert!(
        !quiet.log_text().contains("quiet-key"),
        "a quick put is not logged as slow: {}",
        quiet.log_text()
    );
    assert_eq!(
        quiet_metrics.value("etcd_server_slow_apply_total", &[]),
        0.0
    );

    let mut member =
        Member::start_with_flags("slow", &["--experimental-warning-apply-duration", "1ns"]).await;
    let mut kv = member.kv().await;
    put(&mut kv, "slow-key", secret).await;
    let metrics = Metrics::scrape(member.client_addr()).await;
    assert!(metrics.value("etcd_server_slow_apply_total", &[]) >= 1.0);
    member.terminate().await;
    let log = member.log_text();
    let warning = log
        .lines()
        .find(|line| {
            line.contains("took longer than the warning threshold") && line.contains("slow-key")
        })
        .unwrap_or_else(|| panic!("no slow-request warning for the put in: {log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("member_name=slow"), "{warning}");
    assert!(warning.contains("expected_duration=1ns"), "{warning}");
    assert!(warning.contains("took="), "{warning}");
    assert!(
        warning.contains("request=put key=\"slow-key\" value_size=29"),
        "{warning}"
    );
    assert!(
        !log.contains(secret),
        "the value never reaches the log: {log}"
    );
}
