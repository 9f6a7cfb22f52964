//! `mnemo-bench`, the load tool, run as a process against one member started by the harness
//! (etcd 3.4 with `MNEMO_IT_SERVER=/usr/bin/etcd`): every subcommand with a tiny total ends,
//! prints one JSON line whose counts match what was asked, has no errors, and for `watch`
//! every watcher saw every put exactly once. The store is read back afterwards where the
//! workload leaves a countable trace (each put or successful CAS update bumps one key's
//! version). No timing is asserted: these runs share the machine with everything else.

use std::time::Duration;

use mnemo::pb::etcdserverpb::RangeRequest;
use serde_json::Value;

use crate::support::{Member, range};

/// The longest a tiny run may take, start to exit, before the test fails instead of waiting.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// What one run of the tool left: its exit status, JSON line (if any) and stderr.
struct Run {
    success: bool,
    json: Option<Value>,
    stderr: String,
}

async fn bench(args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mnemo-bench"));
    command.args(args).kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("mnemo-bench {args:?} did not end within {RUN_TIMEOUT:?}"))
        .expect("mnemo-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.len() <= 1,
        "stdout holds one JSON line at most: {stdout}"
    );
    let json = lines.first().map(|line| {
        serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
    });
    Run {
        success: output.status.success(),
        json,
        stderr,
    }
}

/// Runs `args` against `member` and checks what every successful run must show: one JSON
/// line for `op`, `total` ops, no errors, ordered percentiles, the run's shape echoed.
async fn bench_ok(member: &Member, op: &str, total: u64, args: &[&str]) -> Value {
    let endpoints = format!("--endpoints={}", member.endpoint());
    let total_flag = format!("--total={total}");
    let mut full = vec![op, endpoints.as_str(), total_flag.as_str()];
    full.extend_from_slice(args);
    let run = bench(&full).await;
    assert!(run.success, "mnemo-bench {full:?} failed:\n{}", run.stderr);
    let json = run.json.expect("a JSON line on stdout");
    assert_eq!(json["op"], op, "{json}");
    assert_eq!(json["ops"], total, "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    let number = |field: &str| {
        json[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} is not a count: {json}"))
    };
    assert!(number("p50_us") > 0, "{json}");
    assert!(number("p50_us") <= number("p90_us"), "{json}");
    assert!(number("p90_us") <= number("p99_us"), "{json}");
    assert!(number("p99_us") <= number("max_us"), "{json}");
    assert!(
        json["ops_per_sec"].as_f64().is_some_and(|rate| rate > 0.0),
        "{json}"
    );
    assert!(
        json["secs"].as_f64().is_some_and(|secs| secs > 0.0),
        "{json}"
    );
    // The human table goes to stderr, never into the JSON line.
    assert!(run.stderr.contains("ops/s"), "{}", run.stderr);
    json
}

/// The sum of the versions of every key under `prefix`: one per put since its creation.
async fn versions_under(member: &Member, prefix: &str) -> i64 {
    let mut kv = member.kv().await;
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("a non-empty prefix") += 1;
    let response = range(
        &mut kv,
        RangeRequest {
            key: prefix.as_bytes().to_vec().into(),
            range_end: end.into(),
            ..Default::default()
        },
    )
    .await;
    response.kvs.iter().map(|kv| kv.version).sum()
}

#[tokio::test]
async fn put_does_exactly_the_total_over_several_connections() {
    let member = Member::start().await;
    let json = bench_ok(
        &member,
        "put",
        300,
        &[
            "--clients=6",
            "--conns=3",
            "--key-space=50",
            "--prefix=p/",
            "--sequential",
        ],
    )
    .await;
    assert_eq!(json["clients"], 6);
    assert_eq!(json["conns"], 3);
    assert_eq!(versions_under(&member, "p/").await, 300);
}

#[tokio::test]
async fn range_reads_preloaded_keys_both_ways() {
    let member = Member::start().await;
    let point = bench_ok(
        &member,
        "range",
        200,
        &["--clients=4", "--key-space=100", "--consistency=l"],
    )
    .await;
    assert_eq!(point["consistency"], "l");
    // Every point read finds its key, since the key space was preloaded.
    assert_eq!(point["kvs"], 200, "{point}");
    let spans = bench_ok(
        &member,
        "range",
        100,
        &[
            "--clients=2",
            "--key-space=100",
            "--consistency=s",
            "--range-size=10",
            "--preload=0",
        ],
    )
    .await;
    assert_eq!(spans["consistency"], "s");
    assert_eq!(spans["kvs"], 1000, "{spans}");
}

#[tokio::test]
async fn txn_cas_counts_only_successful_updates() {
    let member = Member::start().await;
    // Four clients on two keys conflict; whatever the conflicts, each counted update is one
    // put, so the keys' versions add up to the total.
    let json = bench_ok(
        &member,
        "txn-cas",
        120,
        &["--clients=4", "--key-space=2", "--prefix=cas/"],
    )
    .await;
    assert!(json["conflicts"].as_u64().is_some(), "{json}");
    assert_eq!(json["updates_per_sec"], json["ops_per_sec"]);
    assert_eq!(versions_under(&member, "cas/").await, 120);
}

#[tokio::test]
async fn watch_delivers_every_put_to_every_watcher_once_in_order() {
    let member = Member::start().await;
    let json = bench_ok(
        &member,
        "watch",
        150,
        &["--watchers=4", "--clients=3", "--conns=2", "--rate=300"],
    )
    .await;
    assert_eq!(json["missing"], 0, "{json}");
    assert_eq!(json["duplicates"], 0, "{json}");
    assert_eq!(json["out_of_order"], 0, "{json}");
    assert_eq!(json["complete_watchers"], 4, "{json}");
    assert_eq!(json["events"], 4 * 150, "{json}");

    // Flat out (no pacing), over keys already written: overwrites are events too.
    let flat_out = bench_ok(
        &member,
        "watch",
        200,
        &["--watchers=3", "--clients=4", "--rate=0", "--key-space=20"],
    )
    .await;
    assert_eq!(flat_out["missing"], 0, "{flat_out}");
    assert_eq!(flat_out["duplicates"], 0, "{flat_out}");
    assert_eq!(flat_out["out_of_order"], 0, "{flat_out}");
    assert_eq!(flat_out["events"], 3 * 200, "{flat_out}");
}

#[tokio::test]
async fn lease_grants_renews_and_revokes() {
    let member = Member::start().await;
    bench_ok(&member, "lease", 60, &["--clients=3"]).await;
    // Every lease was revoked: none is left.
    let mut lease = mnemo::pb::etcdserverpb::lease_client::LeaseClient::new(member.channel().await);
    let leases = lease
        .lease_leases(mnemo::pb::etcdserverpb::LeaseLeasesRequest {})
        .await
        .expect("LeaseLeases")
        .into_inner();
    assert!(leases.leases.is_empty(), "{:?}", leases.leases);
}

#[tokio::test]
async fn mixed_splits_reads_and_writes() {
    let member = Member::start().await;
    let json = bench_ok(
        &member,
        "mixed",
        200,
        &["--clients=4", "--key-space=50", "--read-ratio=0.5"],
    )
    .await;
    let reads = json["reads"].as_u64().expect("reads");
    let writes = json["writes"].as_u64().expect("writes");
    assert_eq!(reads + writes, 200, "{json}");
    // With 200 fair coin flips, either side empty would mean the ratio is ignored.
    assert!(reads > 0 && writes > 0, "{json}");
}

#[tokio::test]
async fn a_duration_bounds_a_run_without_a_total() {
    let member = Member::start().await;
    let endpoints = format!("--endpoints={}", member.endpoint());
    let run = bench(&["put", &endpoints, "--duration=1s"]).await;
    assert!(run.success, "{}", run.stderr);
    let json = run.json.expect("a JSON line");
    assert!(json["ops"].as_u64().is_some_and(|ops| ops > 0), "{json}");
    assert_eq!(json["errors"], 0, "{json}");
}

#[tokio::test]
async fn bad_options_and_dead_endpoints_fail_with_a_message_and_no_json() {
    let refused = bench(&["range", "--range-size=0", "--key-space=10"]).await;
    assert!(!refused.success);
    assert!(refused.json.is_none());
    assert!(
        refused.stderr.contains("--range-size"),
        "{}",
        refused.stderr
    );

    // A port nothing listens on: bind, note the port, release it.
    let port = crate::support::free_port();
    let endpoints = format!("--endpoints=127.0.0.1:{port}");
    let dead = bench(&["put", &endpoints, "--total=1"]).await;
    assert!(!dead.success);
    assert!(dead.json.is_none());
    assert!(dead.stderr.contains("cannot connect"), "{}", dead.stderr);
}

#[tokio::test]
async fn a_client_gives_up_on_a_server_that_stopped_answering() {
    // A paused member accepts connections (the kernel does) but answers nothing: each put
    // times out, and after 20 in a row the client stops instead of spending a timeout on
    // each of its 1,000 ops.
    let member = Member::start().await;
    member.signal("STOP");
    let endpoints = format!("--endpoints={}", member.endpoint());
    let run = bench(&["put", &endpoints, "--total=1000", "--request-timeout=100ms"]).await;
    member.signal("CONT");
    assert!(run.success, "{}", run.stderr);
    let json = run.json.expect("a JSON line");
    assert_eq!(json["ops"], 0, "{json}");
    assert_eq!(json["errors"], 20, "{json}");
    assert_eq!(json["gave_up_clients"], 1, "{json}");
    assert!(
        json["first_error"]
            .as_str()
            .is_some_and(|error| error.contains("timeout")),
        "{json}"
    );
}
