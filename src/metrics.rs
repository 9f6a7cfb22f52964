//! Prometheus metrics: the one registry of the process, every metric's name, help text, type,
//! labels and buckets, and the text rendering `/metrics` serves.
//!
//! Names follow etcd's where the meaning is the same, so dashboards and alerts written for
//! etcd work unchanged; mnemo's own metrics start with `mnemo_`. Two kinds of value live here:
//! - *event counts and latencies* (proposals failed, puts, fsync durations, gRPC calls) are
//!   bumped by the modules where the event happens, through the handles of [`get`]; every
//!   handle is an atomic, so a bump takes no lock and never waits;
//! - *state* (leader, indexes, database size, watchers) is sampled when `/metrics` is
//!   scraped, from a [`MemberSample`] the caller reads off the member, so nothing has to keep
//!   a copy of it up to date.
//!
//! The registry is process-wide: one member runs per process. An embedder running several
//! members in one process sees their counts summed and the state of the member last scraped.
//!
//! This module must not import any module of the crate but `limits`: every layer may bump a
//! handle, so it sits below all of them. It reads no clock; callers time what they measure.

use std::sync::LazyLock;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::limits::ETCD_COMPAT_VERSION;

/// etcd's disk latency buckets (seconds): 1 ms doubling up to about 8 s, so a slow disk's
/// tail stays visible without a bucket per millisecond.
const DISK_DURATION_BUCKETS_START_SECS: f64 = 0.001;
/// How many disk latency buckets etcd has (0.001 s to 8.192 s).
const DISK_DURATION_BUCKETS_COUNT: usize = 14;
/// Buckets of the WAL group-commit size (entries per fsync): powers of two up to 1024, past
/// the most a batch can hold, so a saturated writer shows in the top bucket.
const WAL_BATCH_ENTRIES_BUCKETS_COUNT: usize = 11;

/// Every handle, registered once in the private `REGISTRY`.
pub struct Metrics {
    /// `etcd_server_has_leader` (sampled).
    has_leader: IntGauge,
    /// `etcd_server_is_leader` (sampled).
    is_leader: IntGauge,
    /// `etcd_server_leader_changes_seen_total`: bumped when this member sees a new leader.
    pub leader_changes_seen: IntCounter,
    /// `etcd_server_proposals_committed_total` (sampled: the Raft commit index, a gauge in
    /// etcd despite its name).
    proposals_committed: IntGauge,
    /// `etcd_server_proposals_applied_total` (sampled: the applied index).
    proposals_applied: IntGauge,
    /// `etcd_server_proposals_pending`: proposals this member is waiting on.
    pub proposals_pending: IntGauge,
    /// `etcd_server_proposals_failed_total`: proposals that did not commit (no leader, leader
    /// changed, timeout, stopped).
    pub proposals_failed: IntCounter,
    /// `etcd_server_slow_apply_total`: requests slower than the warning threshold.
    pub slow_apply: IntCounter,
    /// `etcd_server_id{server_id}` (sampled).
    server_id: IntGaugeVec,
    /// `etcd_server_version{server_version}`.
    server_version: IntGaugeVec,
    /// `etcd_mvcc_db_total_size_in_bytes` (sampled).
    db_total_size: IntGauge,
    /// `etcd_mvcc_db_total_size_in_use_in_bytes` (sampled).
    db_in_use_size: IntGauge,
    /// `etcd_mvcc_put_total`: puts served by this member (a txn's puts included).
    pub mvcc_put: IntCounter,
    /// `etcd_mvcc_range_total`: ranges served by this member.
    pub mvcc_range: IntCounter,
    /// `etcd_mvcc_delete_total`: delete-ranges served by this member.
    pub mvcc_delete: IntCounter,
    /// `etcd_mvcc_txn_total`: transactions served by this member.
    pub mvcc_txn: IntCounter,
    /// `etcd_disk_wal_fsync_duration_seconds`: each fsync of the Raft log.
    pub wal_fsync: Histogram,
    /// `etcd_disk_backend_commit_duration_seconds`: each state-machine write batch.
    pub backend_commit: Histogram,
    /// `etcd_debugging_mvcc_watch_stream_total` (sampled).
    watch_streams: IntGauge,
    /// `etcd_debugging_mvcc_watcher_total` (sampled).
    watchers: IntGauge,
    /// `etcd_debugging_mvcc_slow_watcher_total` (sampled: unsynced watchers).
    slow_watchers: IntGauge,
    /// `etcd_debugging_lease_granted_total`: grants applied.
    pub lease_granted: IntCounter,
    /// `etcd_debugging_lease_revoked_total`: revokes applied.
    pub lease_revoked: IntCounter,
    /// `etcd_debugging_lease_renewed_total`: renewals by this member as leader.
    pub lease_renewed: IntCounter,
    /// `grpc_server_started_total{grpc_type,grpc_service,grpc_method}`.
    pub grpc_started: IntCounterVec,
    /// `grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}`.
    pub grpc_handled: IntCounterVec,
    /// `grpc_server_msg_received_total{grpc_type,grpc_service,grpc_method}`.
    pub grpc_msg_received: IntCounterVec,
    /// `grpc_server_msg_sent_total{grpc_type,grpc_service,grpc_method}`.
    pub grpc_msg_sent: IntCounterVec,
    /// `mnemo_wal_group_commit_entries`: log records made durable by one fsync.
    pub wal_batch_entries: Histogram,
    /// `mnemo_apply_lag_entries` (sampled): committed entries not applied yet.
    apply_lag: IntGauge,
}

/// The state sampled at each scrape, read off the member by the caller.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemberSample {
    /// This member's id.
    pub member_id: u64,
    /// A leader is known.
    pub has_leader: bool,
    /// This member leads.
    pub is_leader: bool,
    /// The Raft commit index.
    pub commit_index: u64,
    /// The applied index.
    pub applied_index: u64,
    /// The backend's size on disk.
    pub db_size_bytes: u64,
    /// The backend's size holding live data.
    pub db_size_in_use_bytes: u64,
    /// Open watch streams.
    pub watch_streams: usize,
    /// Watchers on all streams.
    pub watchers: usize,
    /// Watchers catching up from history.
    pub unsynced_watchers: usize,
}

/// The process's registry, holding every metric of [`Metrics`] and the process collector.
static REGISTRY: LazyLock<(Registry, Metrics)> = LazyLock::new(build);

/// The handles to bump.
pub fn get() -> &'static Metrics {
    &REGISTRY.1
}

/// Sets the sampled gauges from `sample` and renders every metric in Prometheus's text format.
pub fn render(sample: &MemberSample) -> String {
    let (registry, metrics) = &*REGISTRY;
    metrics.has_leader.set(i64::from(sample.has_leader));
    metrics.is_leader.set(i64::from(sample.is_leader));
    metrics
        .proposals_committed
        .set(saturate(sample.commit_index));
    metrics
        .proposals_applied
        .set(saturate(sample.applied_index));
    metrics.apply_lag.set(saturate(
        sample.commit_index.saturating_sub(sample.applied_index),
    ));
    metrics.db_total_size.set(saturate(sample.db_size_bytes));
    metrics
        .db_in_use_size
        .set(saturate(sample.db_size_in_use_bytes));
    metrics
        .watch_streams
        .set(saturate(sample.watch_streams as u64));
    metrics.watchers.set(saturate(sample.watchers as u64));
    metrics
        .slow_watchers
        .set(saturate(sample.unsynced_watchers as u64));
    // One series, labelled with the current id (etcd's shape: value 1, id in hex).
    metrics.server_id.reset();
    metrics
        .server_id
        .with_label_values(&[&format!("{:x}", sample.member_id)])
        .set(1);
    let mut text = Vec::new();
    if let Err(err) = TextEncoder::new().encode(&registry.gather(), &mut text) {
        // Only a metric with invalid labels fails to encode, which is a bug here; the
        // scrape still gets what was written.
        tracing::error!(%err, "encoding metrics");
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

fn saturate(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn build() -> (Registry, Metrics) {
    let registry = Registry::new();
    let disk_buckets = prometheus::exponential_buckets(
        DISK_DURATION_BUCKETS_START_SECS,
        2.0,
        DISK_DURATION_BUCKETS_COUNT,
    )
    .expect("constant bucket layout is valid");
    let batch_buckets = prometheus::exponential_buckets(1.0, 2.0, WAL_BATCH_ENTRIES_BUCKETS_COUNT)
        .expect("constant bucket layout is valid");
    let grpc_labels = ["grpc_type", "grpc_service", "grpc_method"];
    let metrics = Metrics {
        has_leader: gauge(
            "etcd_server_has_leader",
            "1 when this member knows a leader, 0 otherwise.",
        ),
        is_leader: gauge(
            "etcd_server_is_leader",
            "1 when this member is the leader, 0 otherwise.",
        ),
        leader_changes_seen: counter(
            "etcd_server_leader_changes_seen_total",
            "Times this member saw a new leader.",
        ),
        proposals_committed: gauge(
            "etcd_server_proposals_committed_total",
            "Raft commit index of this member.",
        ),
        proposals_applied: gauge(
            "etcd_server_proposals_applied_total",
            "Raft index this member has applied up to.",
        ),
        proposals_pending: gauge(
            "etcd_server_proposals_pending",
            "Proposals this member is waiting on.",
        ),
        proposals_failed: counter(
            "etcd_server_proposals_failed_total",
            "Proposals that did not commit (no leader, leader change, timeout).",
        ),
        slow_apply: counter(
            "etcd_server_slow_apply_total",
            "Requests slower than --experimental-warning-apply-duration.",
        ),
        server_id: gauge_vec(
            "etcd_server_id",
            "Always 1; the server_id label is this member's id in hex.",
            &["server_id"],
        ),
        server_version: gauge_vec(
            "etcd_server_version",
            "Always 1; the server_version label is the etcd API version served.",
            &["server_version"],
        ),
        db_total_size: gauge(
            "etcd_mvcc_db_total_size_in_bytes",
            "Bytes the backend takes on disk.",
        ),
        db_in_use_size: gauge(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Bytes of the backend holding live data.",
        ),
        mvcc_put: counter("etcd_mvcc_put_total", "Puts served by this member."),
        mvcc_range: counter("etcd_mvcc_range_total", "Ranges served by this member."),
        mvcc_delete: counter(
            "etcd_mvcc_delete_total",
            "Delete-ranges served by this member.",
        ),
        mvcc_txn: counter("etcd_mvcc_txn_total", "Transactions served by this member."),
        wal_fsync: histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "Seconds each fsync of the Raft write-ahead log took.",
            disk_buckets.clone(),
        ),
        backend_commit: histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "Seconds each backend write batch took to commit.",
            disk_buckets,
        ),
        watch_streams: gauge(
            "etcd_debugging_mvcc_watch_stream_total",
            "Open watch streams.",
        ),
        watchers: gauge(
            "etcd_debugging_mvcc_watcher_total",
            "Watchers on all open streams.",
        ),
        slow_watchers: gauge(
            "etcd_debugging_mvcc_slow_watcher_total",
            "Watchers behind the latest revision, catching up.",
        ),
        lease_granted: counter(
            "etcd_debugging_lease_granted_total",
            "Lease grants applied.",
        ),
        lease_revoked: counter(
            "etcd_debugging_lease_revoked_total",
            "Lease revokes applied.",
        ),
        lease_renewed: counter(
            "etcd_debugging_lease_renewed_total",
            "Lease renewals made by this member as leader.",
        ),
        grpc_started: counter_vec(
            "grpc_server_started_total",
            "gRPC calls started, by method.",
            &grpc_labels,
        ),
        grpc_handled: counter_vec(
            "grpc_server_handled_total",
            "gRPC calls finished, by method and status code.",
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        ),
        grpc_msg_received: counter_vec(
            "grpc_server_msg_received_total",
            "gRPC messages received, by method.",
            &grpc_labels,
        ),
        grpc_msg_sent: counter_vec(
            "grpc_server_msg_sent_total",
            "gRPC messages sent, by method.",
            &grpc_labels,
        ),
        wal_batch_entries: histogram(
            "mnemo_wal_group_commit_entries",
            "Raft log records made durable by one WAL fsync (group commit size).",
            batch_buckets,
        ),
        apply_lag: gauge(
            "mnemo_apply_lag_entries",
            "Committed Raft entries this member has not applied yet.",
        ),
    };
    metrics
        .server_version
        .with_label_values(&[ETCD_COMPAT_VERSION])
        .set(1);
    let collectors: Vec<Box<dyn Collector>> = vec![
        Box::new(metrics.has_leader.clone()),
        Box::new(metrics.is_leader.clone()),
        Box::new(metrics.leader_changes_seen.clone()),
        Box::new(metrics.proposals_committed.clone()),
        Box::new(metrics.proposals_applied.clone()),
        Box::new(metrics.proposals_pending.clone()),
        Box::new(metrics.proposals_failed.clone()),
        Box::new(metrics.slow_apply.clone()),
        Box::new(metrics.server_id.clone()),
        Box::new(metrics.server_version.clone()),
        Box::new(metrics.db_total_size.clone()),
        Box::new(metrics.db_in_use_size.clone()),
        Box::new(metrics.mvcc_put.clone()),
        Box::new(metrics.mvcc_range.clone()),
        Box::new(metrics.mvcc_delete.clone()),
        Box::new(metrics.mvcc_txn.clone()),
        Box::new(metrics.wal_fsync.clone()),
        Box::new(metrics.backend_commit.clone()),
        Box::new(metrics.watch_streams.clone()),
        Box::new(metrics.watchers.clone()),
        Box::new(metrics.slow_watchers.clone()),
        Box::new(metrics.lease_granted.clone()),
        Box::new(metrics.lease_revoked.clone()),
        Box::new(metrics.lease_renewed.clone()),
        Box::new(metrics.grpc_started.clone()),
        Box::new(metrics.grpc_handled.clone()),
        Box::new(metrics.grpc_msg_received.clone()),
        Box::new(metrics.grpc_msg_sent.clone()),
        Box::new(metrics.wal_batch_entries.clone()),
        Box::new(metrics.apply_lag.clone()),
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        Box::new(prometheus::process_collector::ProcessCollector::for_self()),
    ];
    for collector in collectors {
        registry
            .register(collector)
            .expect("each metric name is registered once");
    }
    (registry, metrics)
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("constant metric name is valid")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("constant metric name is valid")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("constant metric name is valid")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("constant metric name is valid")
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("constant metric name is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_buckets_match_etcd() {
        let buckets = prometheus::exponential_buckets(
            DISK_DURATION_BUCKETS_START_SECS,
            2.0,
            DISK_DURATION_BUCKETS_COUNT,
        )
        .unwrap();
        assert_eq!(buckets.first().copied(), Some(0.001));
        assert!((buckets.last().copied().unwrap() - 8.192).abs() < 1e-9);
    }

    #[test]
    fn render_reports_the_sample() {
        let sample = MemberSample {
            member_id: 0xabc,
            has_leader: true,
            commit_index: 10,
            applied_index: 7,
            ..MemberSample::default()
        };
        let text = render(&sample);
        assert!(text.contains("etcd_server_has_leader 1\n"), "{text}");
        assert!(
            text.contains("etcd_server_id{server_id=\"abc\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("mnemo_apply_lag_entries 3\n"), "{text}");
        assert!(text.contains("process_cpu_seconds_total"), "{text}");
    }
}
