//! Tests of the whole page and the files: hand-made histories and results, checked for where the
//! faults are drawn, how many points and boxes there are, and that the markup is balanced.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::json;

use super::*;

const MS: u64 = 1_000_000;

/// History lines, written the way the recorder writes them.
#[derive(Default)]
struct Lines(String);

impl Lines {
    fn invoke(&mut self, process: u64, ms: u64, f: &str, key: &str) -> &mut Self {
        let line = json!({"type": "invoke", "process": process, "time": ms * MS,
            "input": {"key": key, "f": f, "value": format!("v{ms}")}});
        self.push(&line)
    }

    fn complete(&mut self, kind: &str, process: u64, ms: u64, f: &str) -> &mut Self {
        let mut line = json!({"type": kind, "process": process, "time": ms * MS});
        if kind == "ok" {
            line["output"] = json!({"f": f, "revision": ms});
        }
        self.push(&line)
    }

    fn op(&mut self, process: u64, from_ms: u64, to_ms: u64, f: &str, key: &str) -> &mut Self {
        self.invoke(process, from_ms, f, key)
            .complete("ok", process, to_ms, f)
    }

    fn nemesis(&mut self, ms: u64, f: &str, target: &str) -> &mut Self {
        let line = json!({"type": "nemesis", "time": ms * MS, "f": f,
            "value": {"target": target}});
        self.push(&line)
    }

    fn push(&mut self, line: &Value) -> &mut Self {
        self.0.push_str(&line.to_string());
        self.0.push('\n');
        self
    }

    fn history(&self) -> RunHistory {
        let text = format!(
            "{{\"format\":\"mnemo-history\",\"version\":1,\"model\":\"etcd\"}}\n{}",
            self.0
        );
        events::read(text.as_bytes(), &BTreeSet::from(["k".to_owned()])).unwrap()
    }
}

fn report(validity: Validity, checks: Vec<CheckResult>) -> TestReport {
    let mut counts = Counts::default();
    counts.add("write", "ok", None);
    counts.add("read", "info", Some("timed out"));
    TestReport {
        run_dir: PathBuf::from("/nowhere/20260101T000000.000Z"),
        validity,
        checks,
        counts,
        nemesis: NemesisReport {
            started: vec!["kill".to_owned()],
            errors: vec![],
        },
        elapsed: Duration::from_secs(12),
    }
}

fn valid_check() -> CheckResult {
    CheckResult {
        name: "linearizable".to_owned(),
        validity: Validity::Valid,
        summary: "linearizable (5 operations)".to_owned(),
        details: json!({}),
    }
}

/// Six operations over ten seconds, a kill from 2 s to 4 s and a partition from 6 s to the heal
/// at 10 s; five operations completed (ok, fail, info), one never did.
fn small_history() -> RunHistory {
    let mut lines = Lines::default();
    lines
        .op(1, 500, 600, "put", "k1")
        .op(2, 1000, 1002, "get", "k1")
        .nemesis(2000, "start-kill", "n1")
        .invoke(3, 2500, "cas", "k2")
        .complete("fail", 3, 2600, "cas")
        .invoke(4, 3000, "put", "k2")
        .nemesis(4000, "stop-kill", "n1")
        .complete("info", 4, 5000, "put")
        .invoke(5, 6000, "get", "k3")
        .nemesis(6000, "start-partition", "n2")
        .op(1, 7000, 7010, "get", "k1")
        .nemesis(10_000, "heal", "");
    lines.history()
}

/// Every `<tag ...>` of `markup` (skipping the doctype), as (name, closing, self-closing).
fn tags(markup: &str) -> Vec<(String, bool, bool)> {
    let mut found = Vec::new();
    let mut rest = markup;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("an unclosed tag") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        assert!(!name.is_empty(), "a stray '<' before {tag:?}");
        found.push((name, closing, tag.ends_with('/')));
    }
    found
}

/// Panics unless every element of `markup` is closed in order (`meta` needs no closing).
fn assert_balanced(markup: &str) {
    let mut open: Vec<String> = Vec::new();
    for (name, closing, self_closing) in tags(markup) {
        if self_closing || name == "meta" {
            continue;
        }
        if closing {
            assert_eq!(
                open.pop().as_deref(),
                Some(name.as_str()),
                "</{name}> out of place"
            );
        } else {
            open.push(name);
        }
    }
    assert!(open.is_empty(), "never closed: {open:?}");
}

/// The (x, width) of every shaded fault of class `class`, in drawing order.
fn fault_rects(html: &str, class: &str) -> Vec<(String, String)> {
    let marker = format!("<rect class=\"fault\" data-fault=\"{class}\" ");
    html.match_indices(&marker)
        .map(|(at, _)| {
            let attribute = |name: &str| {
                let tail = &html[at..];
                let start = tail.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
                tail[start..start + tail[start..].find('"').unwrap()].to_owned()
            };
            (attribute("x"), attribute("width"))
        })
        .collect()
}

#[test]
fn faults_are_shaded_at_their_times_in_every_chart() {
    let history = small_history();
    let html = render_html(
        "run",
        &report(Validity::Valid, vec![valid_check()]),
        &history,
        None,
        "",
    );
    // The time axis spans 64..984 px for 0..10 s: 2 s is at 64 + 920 × 0.2.
    assert_eq!(
        fault_rects(&html, "kill"),
        vec![("248.0".to_owned(), "184.0".to_owned()); 3]
    );
    assert_eq!(
        fault_rects(&html, "partition"),
        vec![("616.0".to_owned(), "368.0".to_owned()); 3]
    );
    // Each class has a row of bars named on the left; each bar names its target.
    assert_eq!(html.matches("text-anchor=\"end\">kill</text>").count(), 3);
    assert_eq!(
        html.matches("text-anchor=\"end\">partition</text>").count(),
        3
    );
    assert_eq!(html.matches(">n1</text>").count(), 3);
    assert_eq!(html.matches(">n2</text>").count(), 3);
    assert!(html.contains("<title>kill n1: 2.00 s to 4.00 s</title>"));
}

#[test]
fn one_point_per_completed_operation() {
    let history = small_history();
    let html = render_html(
        "run",
        &report(Validity::Valid, vec![valid_check()]),
        &history,
        None,
        "",
    );
    assert_eq!(html.matches("class=\"pt ").count(), 5);
    assert_eq!(html.matches("class=\"pt c").count(), 5);
    assert_eq!(html.matches(" ok\" cx=").count(), 3);
    assert_eq!(html.matches(" fail\" x=").count(), 1);
    assert_eq!(html.matches(" info\" d=").count(), 1);
    // The never-completed get at 6 s has no point, but counts in the throughput chart.
    assert!(!html.contains("get k3 p5"));
}

#[test]
fn the_page_is_balanced_and_self_contained() {
    let history = small_history();
    let test = json!({"workload": "register", "request_timeout_secs": 2.0, "nemesis": ["kill"]});
    let html = render_html(
        "run <1>",
        &report(Validity::Valid, vec![valid_check()]),
        &history,
        Some(&test),
        "a & b",
    );
    assert_balanced(&html);
    assert_eq!(html.matches("<svg").count(), 3);
    assert_eq!(html.matches("</svg>").count(), 3);
    assert!(!html.contains("<script"), "no scripts");
    // Nothing to fetch: the only address is the SVG namespace, which is a name, not a link.
    let addresses = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!addresses.contains("http:") && !addresses.contains("https:"));
    assert!(html.contains("run &lt;1&gt;") && html.contains("a &amp; b"));
    assert!(html.contains("request timeout"));
}

/// Key `k`: ten puts by process 1 and ten gets by process 2 before the blocked get of process 3
/// at [1100, 1120] ms; overlapping it, a put of process 4, a get of process 2 that starts as it
/// ends, and a put of process 5 that never completed; a get of another key at the same time and
/// a later get of `k` do not overlap it on `k`.
fn failing_history() -> RunHistory {
    let mut lines = Lines::default();
    lines.invoke(5, 500, "put", "k");
    for i in 0..10 {
        lines.op(1, i * 100, i * 100 + 10, "put", "k");
        lines.op(2, i * 100 + 50, i * 100 + 60, "get", "k");
    }
    lines
        .invoke(4, 1090, "put", "k")
        .invoke(3, 1100, "get", "k")
        .op(6, 1100, 1110, "get", "j")
        .complete("ok", 3, 1120, "get")
        .op(2, 1120, 1130, "get", "k")
        .complete("ok", 4, 1200, "put")
        .op(1, 1300, 1310, "get", "k");
    lines.history()
}

fn failing_check() -> CheckResult {
    CheckResult {
        name: "linearizable".to_owned(),
        validity: Validity::Invalid,
        summary: "not linearizable: key \"k\"".to_owned(),
        details: json!({
            "explanation": "longest linearizable prefix (2 operations): ...",
            "failing_key": "k",
            "prefix_ops": [{"process": 1, "call": 900 * MS}, {"process": 4, "call": 1090 * MS}],
            "prefix_state": "value v900",
            "blocked_op": {"process": 3, "call": 1100 * MS},
        }),
    }
}

/// (process, call ms, classes) of every timeline box.
fn boxes(html: &str) -> Vec<(u64, u64, String)> {
    let mut found: Vec<(u64, u64, String)> = html
        .match_indices("<g class=\"box ")
        .map(|(at, _)| {
            let tail = &html[at..];
            let attribute = |name: &str| {
                let start = tail.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                tail[start..start + tail[start..].find('"').unwrap()].to_owned()
            };
            (
                attribute("data-process").parse().unwrap(),
                attribute("data-call").parse::<u64>().unwrap() / MS,
                attribute("class"),
            )
        })
        .collect();
    found.sort();
    found
}

#[test]
fn the_timeline_shows_only_the_failing_keys_window() {
    let history = failing_history();
    let report = report(Validity::Invalid, vec![failing_check(), valid_check()]);
    let html = render_html("run", &report, &history, None, "");
    assert_balanced(&html);
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "three charts and a timeline"
    );
    let found: Vec<(u64, u64)> = boxes(&html)
        .iter()
        .map(|(p, call, _)| (*p, *call))
        .collect();
    assert_eq!(
        found,
        [
            // The last three puts and gets before it...
            (1, 700),
            (1, 800),
            (1, 900),
            (2, 750),
            (2, 850),
            (2, 950),
            // ... the overlapping get, touching at 1120 ms (intervals are closed), ...
            (2, 1120),
            // ... the blocked get, the overlapping put, and the open put.
            (3, 1100),
            (4, 1090),
            (5, 500),
        ]
    );
    let class_of = |process, call| {
        boxes(&html)
            .into_iter()
            .find(|(p, c, _)| (*p, *c) == (process, call))
            .unwrap()
            .2
    };
    assert_eq!(class_of(3, 1100), "box blocked ok");
    assert_eq!(class_of(4, 1090), "box linearized ok");
    assert_eq!(class_of(1, 900), "box linearized ok");
    assert_eq!(class_of(1, 800), "box other ok");
    assert_eq!(class_of(5, 500), "box other info open");
    assert!(html.contains("value v900"), "the state after the prefix");
    assert!(html.contains("longest linearizable prefix (2 operations)"));
}

#[test]
fn a_valid_run_has_no_timeline_and_an_unknown_blocked_op_none_either() {
    let history = failing_history();
    let html = render_html(
        "run",
        &report(Validity::Valid, vec![valid_check()]),
        &history,
        None,
        "",
    );
    assert_eq!(html.matches("<g class=\"box ").count(), 0);
    let mut check = failing_check();
    check.details["blocked_op"] = json!({"process": 3, "call": 1});
    let html = render_html(
        "run",
        &report(Validity::Invalid, vec![check]),
        &history,
        None,
        "",
    );
    assert_eq!(html.matches("<g class=\"box ").count(), 0);
    assert!(html.contains("no timeline"));
    assert!(
        html.contains("longest linearizable prefix"),
        "the explanation still shows"
    );
}

#[test]
fn a_long_run_draws_at_most_the_cap_and_stays_small() {
    // 50 000 operations, a 10-minute run at about 83 per second.
    let count = 50_000_u64;
    let mut lines = Lines::default();
    for i in 0..count {
        let (f, kind) = match i % 10 {
            0 => ("put", "info"),
            1 => ("cas", "fail"),
            _ => ("get", "ok"),
        };
        let key = format!("r/{:04}", i / 200);
        lines
            .invoke(i % 16, i * 12, f, &key)
            .complete(kind, i % 16, i * 12 + 5, f);
    }
    lines
        .nemesis(100_000, "start-pause", "n3")
        .nemesis(200_000, "stop-pause", "n3");
    let history = lines.history();
    assert_eq!(history.ops.len(), 50_000);
    let html = render_html(
        "run",
        &report(Validity::Valid, vec![valid_check()]),
        &history,
        None,
        "",
    );
    assert_eq!(html.matches("class=\"pt ").count(), plots::POINTS_MAX);
    assert!(html.contains(&format!(
        "{} of 50000 completed operations drawn",
        plots::POINTS_MAX
    )));
    assert!(html.len() < 4 << 20, "{} bytes", html.len());
    assert_balanced(&html);
}

/// A directory of its own under the system's temp dir, removed first if a crashed run left it.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mnemo-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn results_json_reads_back_into_the_report() {
    let store = scratch_dir("results");
    let run_dir = store.join("20260101T000000.000Z");
    std::fs::create_dir_all(&run_dir).unwrap();
    let results = json!({
        "valid": false,
        "counts": {"cas:fail": 2, "read:ok": 541, "read:info": 1},
        "reasons": {"fail": {"Unavailable: leader changed": 2}},
        "faults_started": ["kill", "partition"],
        "nemesis_errors": ["start-pause n2: no such process"],
        "elapsed_secs": 27.5,
        "logs": {"valid": true, "summary": "no member panicked", "panics": []},
        "linearizable": {"valid": false, "summary": "not linearizable", "failing_key": "k"},
        "stats": {"valid": "unknown", "summary": "no cas succeeded", "problems": ["x"]},
    });
    std::fs::write(run_dir.join("results.json"), results.to_string()).unwrap();
    let report = read_results(&run_dir).unwrap();
    assert_eq!(report.validity, Validity::Invalid);
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["linearizable", "stats", "logs"]);
    assert_eq!(report.checks[1].validity, Validity::Unknown);
    assert_eq!(report.checks[0].details, json!({"failing_key": "k"}));
    assert_eq!(report.counts.get("read", "ok"), 541);
    assert_eq!(report.counts.get("cas", "fail"), 2);
    assert_eq!(
        report.counts.reasons["fail"]["Unavailable: leader changed"],
        2
    );
    assert_eq!(report.nemesis.started, ["kill", "partition"]);
    assert_eq!(report.nemesis.errors.len(), 1);
    assert_eq!(report.elapsed, Duration::from_millis(27_500));

    // Without a history the report is still written, and `latest` is not touched.
    let regenerated = regenerate(&run_dir).unwrap();
    assert_eq!(regenerated.checks.len(), 3);
    let summary = std::fs::read_to_string(run_dir.join(SUMMARY_FILE)).unwrap();
    assert!(
        summary.contains("linearizable: Invalid: not linearizable"),
        "{summary}"
    );
    assert!(
        summary.contains("nemesis error: start-pause n2"),
        "{summary}"
    );
    assert_balanced(&std::fs::read_to_string(run_dir.join(HTML_FILE)).unwrap());
    assert!(!store.join(LATEST_LINK).exists());
    std::fs::remove_dir_all(&store).unwrap();
}

#[test]
fn write_points_latest_at_the_newest_run() {
    let store = scratch_dir("latest");
    for name in ["20260101T000000.000Z", "20260101T000100.000Z"] {
        let run_dir = store.join(name);
        std::fs::create_dir_all(&run_dir).unwrap();
        let history = format!(
            "{{\"format\":\"mnemo-history\",\"version\":1,\"model\":\"etcd\"}}\n{}",
            Lines::default().op(1, 10, 20, "get", "k").0
        );
        std::fs::write(run_dir.join(HISTORY_FILE), history).unwrap();
        write(&run_dir, &report(Validity::Valid, vec![valid_check()])).unwrap();
        assert_eq!(
            std::fs::read_link(store.join(LATEST_LINK)).unwrap(),
            PathBuf::from(name)
        );
        assert!(store.join(LATEST_LINK).join(HTML_FILE).exists());
    }
    let leftovers: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&store).unwrap();
}
