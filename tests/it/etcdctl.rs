//! etcdctl 3.4 against a `mnemo` member: what it prints must equal what it prints against etcd
//! 3.4 (captured from etcd 3.4.23 on loopback), except member and cluster ids, durations, raft
//! indexes and the db size, which are implementation details.
//!
//! etcdctl 3.4 has no `get --count-only` (that flag arrived in 3.5); counts are checked through
//! `-w json`, where `count` ignores `--limit`.

use mnemo::pb::etcdserverpb::{MemberListRequest, StatusRequest};
use serde_json::{Value, json};

use crate::support::{Member, assert_fails_with, ok_stdout, parse_semver, stderr_of, stdout_of};

const COMPACTED: &str = "Error: etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "Error: etcdserver: mvcc: required revision is a future revision";

/// Joins lines with a trailing newline each, the way etcdctl prints them.
fn lines(items: &[&str]) -> String {
    items.iter().map(|line| format!("{line}\n")).collect()
}

/// Standard base64 with padding, as etcdctl's JSON prints bytes.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::new();
    for chunk in data.chunks(3) {
        let bytes = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let group = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for index in 0..4 {
            if index <= chunk.len() {
                encoded.push(ALPHABET[(group >> (18 - 6 * index) & 0x3f) as usize] as char);
            } else {
                encoded.push('=');
            }
        }
    }
    encoded
}

/// The member and cluster ids the member reports over gRPC.
async fn ids(member: &Member) -> (u64, u64) {
    let listed = member
        .cluster()
        .await
        .member_list(MemberListRequest::default())
        .await
        .expect("member list");
    let header = listed.into_inner().header.expect("member list header");
    (header.member_id, header.cluster_id)
}

/// etcdctl's JSON header, with the ids and term it must carry.
fn expected_header(value: &Value, member_id: u64, cluster_id: u64, revision: i64) {
    let header = value
        .get("header")
        .unwrap_or_else(|| panic!("no header in {value}"));
    assert_eq!(
        header["cluster_id"].as_u64(),
        Some(cluster_id),
        "cluster_id in {header}"
    );
    assert_eq!(
        header["member_id"].as_u64(),
        Some(member_id),
        "member_id in {header}"
    );
    assert_eq!(
        header["revision"].as_i64(),
        Some(revision),
        "revision in {header}"
    );
    assert!(
        header["raft_term"].as_u64().is_some_and(|term| term >= 1),
        "raft_term in {header}"
    );
    let mut names: Vec<&str> = header
        .as_object()
        .expect("header object")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["cluster_id", "member_id", "raft_term", "revision"]);
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text.trim_end())
        .unwrap_or_else(|err| panic!("etcdctl printed invalid JSON ({err}): {text}"))
}

/// `put` (with --prev-kv) and `get` with --prefix, --from-key, --limit, a range, --keys-only,
/// --print-value-only, --consistency=s and --rev print exactly what they print against etcd.
#[tokio::test]
async fn put_and_get_print_etcds_simple_format() {
    let member = Member::start().await;
    assert_eq!(ok_stdout(&member.etcdctl(&["put", "a", "1"])), "OK\n");
    assert_eq!(
        ok_stdout(&member.etcdctl(&["put", "a", "2", "--prev-kv"])),
        lines(&["OK", "a", "1"])
    );
    assert_eq!(ok_stdout(&member.etcdctl(&["put", "ab", "x"])), "OK\n");
    assert_eq!(ok_stdout(&member.etcdctl(&["put", "b", "22"])), "OK\n");
    assert_eq!(ok_stdout(&member.etcdctl(&["put", "c", "333"])), "OK\n");
    assert_eq!(
        ok_stdout(&member.etcdctl(&["put", "d", "4", "--prev-kv"])),
        "OK\n",
        "no prev kv for a new key"
    );
    // Revisions: a=1 at 2, a=2 at 3, ab at 4, b at 5, c at 6, d at 7.

    let get = |args: &[&str]| ok_stdout(&member.etcdctl(&[&["get"][..], args].concat()));
    assert_eq!(get(&["a"]), lines(&["a", "2"]));
    assert_eq!(get(&["nokey"]), "");
    assert_eq!(get(&["a", "--prefix"]), lines(&["a", "2", "ab", "x"]));
    assert_eq!(
        get(&["b", "--from-key"]),
        lines(&["b", "22", "c", "333", "d", "4"])
    );
    assert_eq!(
        get(&["a", "--from-key", "--limit", "2"]),
        lines(&["a", "2", "ab", "x"])
    );
    assert_eq!(get(&["a", "c"]), lines(&["a", "2", "ab", "x", "b", "22"]));
    assert_eq!(
        get(&["", "--prefix", "--print-value-only"]),
        lines(&["2", "x", "22", "333", "4"])
    );
    assert_eq!(
        get(&["a", "--prefix", "--keys-only"]),
        lines(&["a", "", "ab", ""])
    );
    assert_eq!(
        get(&["a", "--from-key", "--consistency=s"]),
        lines(&["a", "2", "ab", "x", "b", "22", "c", "333", "d", "4"])
    );
    assert_eq!(get(&["a", "--rev=2"]), lines(&["a", "1"]));
    assert_eq!(get(&["a", "--rev=1"]), "");
    assert_eq!(get(&["a", "--prefix", "--rev=3"]), lines(&["a", "2"]));
    assert_fails_with(&member.etcdctl(&["get", "a", "--rev=100"]), FUTURE);
}

/// Keys k1..k4 whose orders by key, create, mod, version and value all differ (no ties):
/// k1 create 3 mod 11 version 3 "m2"; k2 create 5 mod 5 version 1 "z";
/// k3 create 2 mod 9 version 2 "a"; k4 create 4 mod 10 version 4 "f".
fn put_sort_fixture(member: &Member) {
    let writes = [
        ("k3", "m"),
        ("k1", "q"),
        ("k4", "c"),
        ("k2", "z"),
        ("k4", "c"),
        ("k1", "q"),
        ("k4", "c"),
        ("k3", "a"),
        ("k4", "f"),
        ("k1", "m2"),
    ];
    for (key, value) in writes {
        assert_eq!(ok_stdout(&member.etcdctl(&["put", key, value])), "OK\n");
    }
}

fn fixture_lines(order: &[&str]) -> String {
    let value_of = |key: &str| match key {
        "k1" => "m2",
        "k2" => "z",
        "k3" => "a",
        "k4" => "f",
        other => panic!("not in the fixture: {other}"),
    };
    order
        .iter()
        .map(|key| format!("{key}\n{}\n", value_of(key)))
        .collect()
}

/// `get --sort-by` with every target and --order, with and without --limit.
#[tokio::test]
async fn get_sort_by_every_target_in_both_orders() {
    let member = Member::start().await;
    put_sort_fixture(&member);
    let ascending: [(&str, [&str; 4]); 5] = [
        ("KEY", ["k1", "k2", "k3", "k4"]),
        ("CREATE", ["k3", "k1", "k4", "k2"]),
        ("MODIFY", ["k2", "k3", "k4", "k1"]),
        ("VERSION", ["k2", "k3", "k1", "k4"]),
        ("VALUE", ["k3", "k4", "k1", "k2"]),
    ];
    for (target, expected) in ascending {
        let sort_by = format!("--sort-by={target}");
        let up = ok_stdout(&member.etcdctl(&["get", "k", "--prefix", &sort_by, "--order=ASCEND"]));
        assert_eq!(up, fixture_lines(&expected), "{target} ASCEND");
        let mut reversed = expected;
        reversed.reverse();
        let down =
            ok_stdout(&member.etcdctl(&["get", "k", "--prefix", &sort_by, "--order=DESCEND"]));
        assert_eq!(down, fixture_lines(&reversed), "{target} DESCEND");
        // Without --order etcdctl sends order NONE; the server sorts ascending by the target.
        let default_order = ok_stdout(&member.etcdctl(&["get", "k", "--prefix", &sort_by]));
        assert_eq!(
            default_order,
            fixture_lines(&expected),
            "{target} without --order"
        );
        let limited = ok_stdout(&member.etcdctl(&[
            "get",
            "k",
            "--prefix",
            &sort_by,
            "--order=DESCEND",
            "--limit=2",
        ]));
        assert_eq!(
            limited,
            fixture_lines(&reversed[..2]),
            "{target} DESCEND --limit=2"
        );
    }
    let key_descending = ok_stdout(&member.etcdctl(&["get", "k", "--prefix", "--order=DESCEND"]));
    assert_eq!(
        key_descending,
        fixture_lines(&["k4", "k3", "k2", "k1"]),
        "--order alone sorts by key"
    );
}

/// `get -w json`: the header with ids, base64 keys and values, revisions, `count` (which ignores
/// --limit), `more`, and fields at their default value omitted.
#[tokio::test]
async fn get_json_output_has_header_base64_kvs_and_count() {
    let member = Member::start().await;
    put_sort_fixture(&member);
    assert_eq!(ok_stdout(&member.etcdctl(&["put", "other", "o"])), "OK\n"); // revision 12
    let (member_id, cluster_id) = ids(&member).await;

    let full = parse_json(&ok_stdout(
        &member.etcdctl(&["get", "k", "--prefix", "-w", "json"]),
    ));
    expected_header(&full, member_id, cluster_id, 12);
    let kv = |key: &str, create: i64, modified: i64, version: i64, value: &str| {
        json!({
            "key": base64(key.as_bytes()),
            "create_revision": create,
            "mod_revision": modified,
            "version": version,
            "value": base64(value.as_bytes()),
        })
    };
    let expected_kvs = json!([
        kv("k1", 3, 11, 3, "m2"),
        kv("k2", 5, 5, 1, "z"),
        kv("k3", 2, 9, 2, "a"),
        kv("k4", 4, 10, 4, "f"),
    ]);
    assert_eq!(full["kvs"], expected_kvs);
    assert_eq!(full["count"], json!(4));
    assert_eq!(full.get("more"), None, "more is omitted when false");

    let limited = parse_json(&ok_stdout(&member.etcdctl(&[
        "get",
        "k",
        "--prefix",
        "--limit=1",
        "-w",
        "json",
    ])));
    assert_eq!(limited["kvs"], json!([kv("k1", 3, 11, 3, "m2")]));
    assert_eq!(
        (limited["more"].clone(), limited["count"].clone()),
        (json!(true), json!(4)),
        "count ignores --limit"
    );

    let keys_only = parse_json(&ok_stdout(&member.etcdctl(&[
        "get",
        "k3",
        "--keys-only",
        "-w",
        "json",
    ])));
    assert_eq!(
        keys_only["kvs"],
        json!([{"key": base64(b"k3"), "create_revision": 2, "mod_revision": 9, "version": 2}]),
        "keys-only omits the value"
    );

    let old = parse_json(&ok_stdout(
        &member.etcdctl(&["get", "k", "--prefix", "--rev=4", "-w", "json"]),
    ));
    expected_header(&old, member_id, cluster_id, 12);
    assert_eq!(
        old["kvs"],
        json!([
            kv("k1", 3, 3, 1, "q"),
            kv("k3", 2, 2, 1, "m"),
            kv("k4", 4, 4, 1, "c")
        ]),
        "values as of revision 4"
    );
    assert_eq!(old["count"], json!(3));

    let nothing = parse_json(&ok_stdout(&member.etcdctl(&["get", "nokey", "-w", "json"])));
    expected_header(&nothing, member_id, cluster_id, 12);
    assert_eq!(
        nothing.as_object().map(|object| object.len()),
        Some(1),
        "only the header: {nothing}"
    );

    let everything = parse_json(&ok_stdout(
        &member.etcdctl(&["get", "", "--prefix", "-w", "json"]),
    ));
    assert_eq!(everything["count"], json!(5));
}

/// `del` prints the number deleted, then the previous kvs with --prev-kv.
#[tokio::test]
async fn del_prints_the_deleted_count_and_prev_kvs() {
    let member = Member::start().await;
    for (key, value) in [
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("e", "5"),
        ("p/1", "x"),
        ("p/2", "y"),
        ("p/3", "z"),
        ("q", "6"),
        ("r", "7"),
    ] {
        assert_eq!(ok_stdout(&member.etcdctl(&["put", key, value])), "OK\n");
    }
    let del = |args: &[&str]| ok_stdout(&member.etcdctl(&[&["del"][..], args].concat()));
    assert_eq!(del(&["nokey"]), "0\n");
    assert_eq!(del(&["a", "--prev-kv"]), lines(&["1", "a", "1"]));
    assert_eq!(del(&["a"]), "0\n", "already deleted");
    assert_eq!(
        del(&["p/", "--prefix", "--prev-kv"]),
        lines(&["3", "p/1", "x", "p/2", "y", "p/3", "z"])
    );
    assert_eq!(del(&["b", "d"]), "2\n");
    assert_eq!(del(&["q", "--from-key"]), "2\n");
    assert_eq!(
        ok_stdout(&member.etcdctl(&["get", "", "--prefix"])),
        lines(&["e", "5"])
    );
    // Nine puts (revisions 2..=10), then four deletes that removed something: revision 14.
    let (member_id, cluster_id) = ids(&member).await;
    let state = parse_json(&ok_stdout(&member.etcdctl(&["get", "e", "-w", "json"])));
    expected_header(&state, member_id, cluster_id, 14);
}

/// `txn` reading stdin: SUCCESS/FAILURE and one block per op, with mod/value/version/create
/// compares; `-w json` of a failed txn.
#[tokio::test]
async fn txn_from_stdin_prints_the_branch_and_each_response() {
    let member = Member::start().await;
    assert_eq!(ok_stdout(&member.etcdctl(&["put", "k", "v"])), "OK\n"); // revision 2

    let success =
        "mod(\"k\") > \"0\"\nvalue(\"k\") = \"v\"\n\nput k v2\nget k\n\nput k2 failed\n\n";
    assert_eq!(
        ok_stdout(&member.etcdctl_stdin(&["txn"], success)),
        lines(&["SUCCESS", "", "OK", "", "k", "v2"])
    );

    let failure = "value(\"k\") = \"nope\"\n\nput k v3\n\nget k\nput other o\ndel nokey\n\n";
    assert_eq!(
        ok_stdout(&member.etcdctl_stdin(&["txn"], failure)),
        lines(&["FAILURE", "", "k", "v2", "", "OK", "", "0"])
    );

    let version_and_create =
        "version(\"k\") = \"2\"\ncreate(\"k\") > \"0\"\n\ndel k\nput k2 x\n\nput k3 y\n\n";
    assert_eq!(
        ok_stdout(&member.etcdctl_stdin(&["txn"], version_and_create)),
        lines(&["SUCCESS", "", "1", "", "OK"])
    );
    // k is gone now, so the same txn takes the failure branch; -w json omits "succeeded".
    let (member_id, cluster_id) = ids(&member).await;
    let again = parse_json(&ok_stdout(
        &member.etcdctl_stdin(&["txn", "-w", "json"], version_and_create),
    ));
    expected_header(&again, member_id, cluster_id, 6);
    assert_eq!(
        again.get("succeeded"),
        None,
        "succeeded is omitted when false: {again}"
    );
    assert_eq!(
        again["responses"],
        json!([{"Response": {"ResponsePut": {"header": {"revision": 6}}}}])
    );

    let state = ok_stdout(&member.etcdctl(&["get", "", "--prefix"]));
    assert_eq!(state, lines(&["k2", "x", "k3", "y", "other", "o"]));
    assert_eq!(
        ok_stdout(&member.etcdctl(&["get", "k2", "--prefix", "--print-value-only"])),
        lines(&["x"])
    );
}

/// `compaction N` prints `compacted revision N`; reads below it and repeated or future
/// compactions fail with etcd's errors.
#[tokio::test]
async fn compaction_prints_the_revision_and_old_reads_fail() {
    let member = Member::start().await;
    for value in ["1", "2", "3"] {
        assert_eq!(ok_stdout(&member.etcdctl(&["put", "a", value])), "OK\n");
    }
    assert_eq!(ok_stdout(&member.etcdctl(&["put", "b", "1"])), "OK\n"); // revision 5

    assert_eq!(
        ok_stdout(&member.etcdctl(&["compaction", "3"])),
        "compacted revision 3\n"
    );
    assert_fails_with(&member.etcdctl(&["get", "a", "--rev=2"]), COMPACTED);
    assert_eq!(
        ok_stdout(&member.etcdctl(&["get", "a", "--rev=3"])),
        lines(&["a", "2"])
    );
    assert_eq!(
        ok_stdout(&member.etcdctl(&["get", "a", "--rev=4"])),
        lines(&["a", "3"])
    );
    assert_fails_with(&member.etcdctl(&["compaction", "3"]), COMPACTED);
    assert_fails_with(&member.etcdctl(&["compaction", "2"]), COMPACTED);
    assert_fails_with(&member.etcdctl(&["compaction", "100"]), FUTURE);

    assert_eq!(
        ok_stdout(&member.etcdctl(&["compaction", "5", "--physical"])),
        "compacted revision 5\n"
    );
    assert_fails_with(&member.etcdctl(&["get", "a", "--rev=4"]), COMPACTED);
    assert_eq!(
        ok_stdout(&member.etcdctl(&["get", "", "--prefix"])),
        lines(&["a", "3", "b", "1"])
    );
}

/// `defrag` prints etcdctl's line per endpoint, keeps every live key, and gives back the space
/// that compacted history held (mnemo defragments with a full RocksDB compaction).
#[tokio::test]
async fn defrag_reports_each_endpoint_and_shrinks_a_compacted_database() {
    let member = Member::start().await;
    let endpoint = member.endpoint();
    let value = "x".repeat(4096);
    for round in 0..200 {
        let key = format!("k{}", round % 10);
        assert_eq!(ok_stdout(&member.etcdctl(&["put", &key, &value])), "OK\n");
    }
    let db_size = |member: &Member| {
        let status = parse_json(&ok_stdout(
            &member.etcdctl(&["endpoint", "status", "-w", "json"]),
        ));
        status[0]["Status"]["dbSize"]
            .as_i64()
            .expect("dbSize in endpoint status")
    };
    let revision = parse_json(&ok_stdout(&member.etcdctl(&["get", "k0", "-w", "json"])))["header"]
        ["revision"]
        .as_i64()
        .expect("a revision");
    assert_eq!(
        ok_stdout(&member.etcdctl(&["compaction", &revision.to_string(), "--physical"])),
        format!("compacted revision {revision}\n")
    );
    let before = db_size(&member);
    assert_eq!(
        ok_stdout(&member.etcdctl(&["defrag"])),
        format!("Finished defragmenting etcd member[{endpoint}]\n")
    );
    let after = db_size(&member);
    // 190 overwritten 4 KiB values (760 KiB) are garbage after the compaction.
    assert!(
        after < before,
        "defrag did not shrink the database: {before} -> {after} bytes"
    );
    for index in 0..10 {
        let key = format!("k{index}");
        assert_eq!(
            ok_stdout(&member.etcdctl(&["get", &key, "--print-value-only"])),
            format!("{value}\n")
        );
    }
}

/// `endpoint status` in the simple, JSON and table formats.
#[tokio::test]
async fn endpoint_status_in_simple_json_and_table_formats() {
    let member = Member::start().await;
    assert_eq!(ok_stdout(&member.etcdctl(&["put", "k", "v"])), "OK\n");
    let (member_id, cluster_id) = ids(&member).await;
    let status = member
        .maintenance()
        .await
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let version = status.version.clone();
    assert!(
        parse_semver(&version).is_some_and(|semver| semver >= (3, 5, 13)),
        "version {version}"
    );
    let endpoint = member.endpoint();

    // etcd prints: "<endpoint>, <id>, <version>, <db size>, <is leader>, <is learner>, <term>,
    // <index>, <applied index>, <errors>" and a newline, errors empty.
    let simple = ok_stdout(&member.etcdctl(&["endpoint", "status"]));
    let line = simple
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("no newline: {simple:?}"));
    assert!(!line.contains('\n'), "one line per endpoint: {simple:?}");
    let fields: Vec<&str> = line.split(", ").collect();
    assert_eq!(fields.len(), 10, "{line:?}");
    assert_eq!(fields[0], endpoint);
    assert_eq!(fields[1], format!("{member_id:x}"));
    assert_eq!(fields[2], version);
    assert!(
        fields[3].ends_with('B') && fields[3].starts_with(|c: char| c.is_ascii_digit()),
        "db size {:?}",
        fields[3]
    );
    assert_eq!(
        (fields[4], fields[5]),
        ("true", "false"),
        "leader, not learner"
    );
    let term: u64 = fields[6].parse().expect("raft term");
    let index: u64 = fields[7].parse().expect("raft index");
    let applied: u64 = fields[8].parse().expect("raft applied index");
    assert!(term >= 1 && index > 0 && applied > 0, "{line:?}");
    assert_eq!(fields[9], "", "no errors");

    let parsed = parse_json(&ok_stdout(
        &member.etcdctl(&["endpoint", "status", "-w", "json"]),
    ));
    let entries = parsed.as_array().expect("a JSON array");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["Endpoint"], json!(endpoint));
    let reported = &entries[0]["Status"];
    expected_header(reported, member_id, cluster_id, 2);
    assert_eq!(reported["version"], json!(version));
    assert_eq!(reported["leader"].as_u64(), Some(member_id));
    assert!(
        reported["dbSize"].as_i64().is_some_and(|size| size > 0),
        "{reported}"
    );
    assert!(
        reported["raftIndex"]
            .as_u64()
            .is_some_and(|index| index > 0),
        "{reported}"
    );
    assert!(
        reported["raftAppliedIndex"]
            .as_u64()
            .is_some_and(|index| index > 0),
        "{reported}"
    );
    assert_eq!(reported["raftTerm"], reported["header"]["raft_term"]);
    assert!(reported.get("errors").is_none(), "no errors: {reported}");
    assert!(
        reported.get("isLearner").is_none(),
        "not a learner: {reported}"
    );

    let table = ok_stdout(&member.etcdctl(&["endpoint", "status", "-w", "table"]));
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 5, "{table}");
    for border in [rows[0], rows[2], rows[4]] {
        assert!(
            border.starts_with('+') && border.chars().all(|c| c == '+' || c == '-'),
            "{border:?}"
        );
    }
    let cells = |row: &str| {
        row.trim_matches('|')
            .split('|')
            .map(|cell| cell.trim().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cells(rows[1]),
        [
            "ENDPOINT",
            "ID",
            "VERSION",
            "DB SIZE",
            "IS LEADER",
            "IS LEARNER",
            "RAFT TERM",
            "RAFT INDEX",
            "RAFT APPLIED INDEX",
            "ERRORS"
        ]
    );
    let data = cells(rows[3]);
    assert_eq!(data.len(), 10);
    assert_eq!(data[0], endpoint);
    assert_eq!(data[1], format!("{member_id:x}"));
    assert_eq!(data[2], version);
    assert_eq!(
        (data[4].as_str(), data[5].as_str(), data[9].as_str()),
        ("true", "false", "")
    );
}

/// `endpoint health`: etcdctl 3.4 prints the verdict on stderr; also `-w json`.
#[tokio::test]
async fn endpoint_health_reports_healthy() {
    let member = Member::start().await;
    let endpoint = member.endpoint();
    let output = member.etcdctl(&["endpoint", "health"]);
    assert!(
        output.status.success(),
        "endpoint health failed: {}",
        stderr_of(&output)
    );
    // etcdctl 3.4 prints the verdict on stderr.
    assert_eq!(stdout_of(&output), "");
    let stderr = stderr_of(&output);
    let prefix = format!("{endpoint} is healthy: successfully committed proposal: took = ");
    let verdicts: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .collect();
    assert_eq!(verdicts.len(), 1, "stderr:\n{stderr}");
    let took = &verdicts[0][prefix.len()..];
    assert!(
        took.starts_with(|c: char| c.is_ascii_digit()) && took.ends_with('s'),
        "duration {took:?}"
    );

    let parsed = parse_json(&ok_stdout(
        &member.etcdctl(&["endpoint", "health", "-w", "json"]),
    ));
    let entries = parsed.as_array().expect("a JSON array");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["endpoint"], json!(endpoint));
    assert_eq!(entries[0]["health"], json!(true));
    assert!(
        entries[0]["took"]
            .as_str()
            .is_some_and(|took| took.ends_with('s'))
    );
    assert!(entries[0].get("error").is_none(), "{parsed}");
}

/// `member list` in the simple, table and JSON formats.
#[tokio::test]
async fn member_list_in_simple_table_and_json_formats() {
    let member = Member::start_named("alpha").await;
    let (member_id, cluster_id) = ids(&member).await;
    let (endpoint, peer) = (member.endpoint(), member.peer_url());
    let id = format!("{member_id:x}");

    let simple = ok_stdout(&member.etcdctl(&["member", "list"]));
    assert_eq!(
        simple,
        format!("{id}, started, alpha, {peer}, {endpoint}, false\n")
    );

    let table = ok_stdout(&member.etcdctl(&["member", "list", "-w", "table"]));
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 5, "{table}");
    let cells = |row: &str| {
        row.trim_matches('|')
            .split('|')
            .map(|cell| cell.trim().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cells(rows[1]),
        [
            "ID",
            "STATUS",
            "NAME",
            "PEER ADDRS",
            "CLIENT ADDRS",
            "IS LEARNER"
        ]
    );
    assert_eq!(
        cells(rows[3]),
        [
            id.as_str(),
            "started",
            "alpha",
            peer.as_str(),
            endpoint.as_str(),
            "false"
        ]
    );

    let parsed = parse_json(&ok_stdout(
        &member.etcdctl(&["member", "list", "-w", "json"]),
    ));
    let header = &parsed["header"];
    assert_eq!(header["cluster_id"].as_u64(), Some(cluster_id));
    assert_eq!(header["member_id"].as_u64(), Some(member_id));
    assert!(
        header.get("revision").is_none(),
        "member list has no revision: {header}"
    );
    assert_eq!(
        parsed["members"],
        json!([{"ID": member_id, "name": "alpha", "peerURLs": [peer], "clientURLs": [endpoint]}])
    );
}
