//! A run's `history.jsonl` read back for the report, in no workload's vocabulary.
//!
//! Owns the report's view of a history: operations paired by process (whatever their inputs say,
//! as long as they carry an `"f"`), and the nemesis's fault intervals.
//! Must not: judge anything, or assume one workload's fields beyond `"f"` (and `"key"` where
//! present): append, watch and lease histories are read by the same code as register's.
//!
//! Unlike [`crate::history::jsonl::parse`], this reader keeps `fail` operations (the plots show
//! them) and is lenient: a line it cannot read (a harness killed mid-write leaves half a line) is
//! counted and skipped, since a report with a hole is still worth having.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;

use serde_json::Value;

use crate::history::Time;

/// How an operation ended, as the plots tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutcomeClass {
    /// It happened.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// Unknown: an `info`, or never completed.
    Info,
}

impl OutcomeClass {
    /// The history's and the counts' name for it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            OutcomeClass::Ok => "ok",
            OutcomeClass::Fail => "fail",
            OutcomeClass::Info => "info",
        }
    }

    /// Every class, in the order legends list them.
    pub const ALL: [OutcomeClass; 3] = [OutcomeClass::Ok, OutcomeClass::Fail, OutcomeClass::Info];
}

/// One operation: an invoke and, if one came, its completion.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportOp {
    /// The logical client.
    pub process: u64,
    /// The input's `"f"`, or `?` when it has none.
    pub f: String,
    /// The input's `"key"`, when it is a string.
    pub key: Option<String>,
    /// When the request was sent, ns since the run started.
    pub call: Time,
    /// When the completion was recorded; `None` if none ever was.
    pub ret: Option<Time>,
    /// How it ended; an operation never completed is [`OutcomeClass::Info`].
    pub outcome: OutcomeClass,
    /// The request, as recorded; `null` unless the key was asked for (see [`read`]).
    pub input: Value,
    /// The response, on `ok`, when the request was kept.
    pub output: Option<Value>,
}

impl ReportOp {
    /// Response time, when there was a response (`ok` or `fail`): an `info`'s completion time
    /// says when the client gave up, not how long the operation took.
    #[must_use]
    pub fn latency(&self) -> Option<Time> {
        match (self.outcome, self.ret) {
            (OutcomeClass::Ok | OutcomeClass::Fail, Some(ret)) => Some(ret - self.call),
            _ => None,
        }
    }
}

/// One `nemesis` line.
#[derive(Clone, Debug, PartialEq)]
pub struct NemesisLine {
    /// When it was written.
    pub time: Time,
    /// `start-kill`, `stop-kill`, ..., `heal`.
    pub f: String,
    /// Targets, cut links, errors.
    pub value: Value,
}

/// A history as the report sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunHistory {
    /// Every operation, by call time.
    pub ops: Vec<ReportOp>,
    /// The nemesis's lines, in file order.
    pub nemesis: Vec<NemesisLine>,
    /// The latest time of any line: where the plots' time axis ends.
    pub end: Time,
    /// Lines that could not be read, skipped.
    pub skipped_lines: usize,
}

/// Reads `reader`, a `history.jsonl` (its header line is skipped like any other line without
/// a `"type"` it knows). Only operations on `detailed_keys` keep their input and output (the
/// others get `null`): the charts need just `f`, and a 10-minute history's payloads would
/// multiply the memory the report takes.
///
/// # Errors
/// On I/O failure only; malformed lines are counted in [`RunHistory::skipped_lines`].
pub fn read(reader: impl BufRead, detailed_keys: &BTreeSet<String>) -> std::io::Result<RunHistory> {
    let mut history = RunHistory::default();
    // Index in `history.ops` of each process's open operation.
    let mut open: BTreeMap<u64, usize> = BTreeMap::new();
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(mut event) = serde_json::from_str::<Value>(&line) else {
            history.skipped_lines += 1;
            continue;
        };
        if event.get("format").is_some() {
            continue;
        }
        let kind = event.get("type").and_then(Value::as_str);
        let process = event.get("process").and_then(Value::as_u64);
        let Some(time) = event.get("time").and_then(Value::as_u64) else {
            history.skipped_lines += 1;
            continue;
        };
        history.end = history.end.max(time);
        match (kind, process) {
            (Some("nemesis"), _) => history.nemesis.push(NemesisLine {
                time,
                f: text_field(&event, "f").unwrap_or_else(|| "?".to_owned()),
                value: event.get("value").cloned().unwrap_or(Value::Null),
            }),
            (Some("invoke"), Some(process)) => {
                let mut input = event.get_mut("input").map(Value::take).unwrap_or_default();
                let key = text_field(&input, "key");
                let f = text_field(&input, "f").unwrap_or_else(|| "?".to_owned());
                if !key.as_ref().is_some_and(|key| detailed_keys.contains(key)) {
                    input = Value::Null;
                }
                open.insert(process, history.ops.len());
                history.ops.push(ReportOp {
                    process,
                    f,
                    key,
                    call: time,
                    ret: None,
                    outcome: OutcomeClass::Info,
                    input,
                    output: None,
                });
            }
            (Some(completion @ ("ok" | "fail" | "info")), Some(process)) => {
                let Some(index) = open.remove(&process) else {
                    history.skipped_lines += 1;
                    continue;
                };
                let op = &mut history.ops[index];
                op.ret = Some(time.max(op.call));
                op.outcome = match completion {
                    "ok" => OutcomeClass::Ok,
                    "fail" => OutcomeClass::Fail,
                    _ => OutcomeClass::Info,
                };
                if !op.input.is_null() {
                    op.output = event.get_mut("output").map(Value::take);
                }
            }
            _ => history.skipped_lines += 1,
        }
    }
    // Lines are written in time order, but sort anyway: a hand-edited file need not be.
    history.ops.sort_by_key(|op| op.call);
    Ok(history)
}

fn text_field(value: &Value, field: &str) -> Option<String> {
    value.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// A fault in force from `start` to `end`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultInterval {
    /// `kill`, `pause`, `partition`, ...: what follows `start-`.
    pub class: String,
    /// Whom it hit: the start line's `target`, or its whole value when it names none.
    pub target: String,
    /// Its start line's time.
    pub start: Time,
    /// The matching stop, the next start of the class, a `heal`, or the history's end.
    pub end: Time,
    /// The start line carried an `error`: the fault may be only partly in force.
    pub failed: bool,
}

/// The nemesis's faults as intervals: a `start-X` opens one for class X, the next `stop-X` or
/// `start-X` closes it, a `heal` closes every open one, and the history's end closes the rest.
/// Classes are matched, not targets, because the nemesis holds one fault of a class at a time.
#[must_use]
pub fn fault_intervals(history: &RunHistory) -> Vec<FaultInterval> {
    let mut intervals = Vec::new();
    let mut open: BTreeMap<String, FaultInterval> = BTreeMap::new();
    for line in &history.nemesis {
        if line.f == "heal" {
            for (_, mut interval) in std::mem::take(&mut open) {
                interval.end = line.time;
                intervals.push(interval);
            }
        } else if let Some(class) = line.f.strip_prefix("start-") {
            if let Some(mut previous) = open.remove(class) {
                previous.end = line.time;
                intervals.push(previous);
            }
            let target = match line.value.get("target").and_then(Value::as_str) {
                Some(target) => target.to_owned(),
                None => line.value.to_string(),
            };
            open.insert(
                class.to_owned(),
                FaultInterval {
                    class: class.to_owned(),
                    target,
                    start: line.time,
                    end: line.time,
                    failed: line.value.get("error").is_some(),
                },
            );
        } else if let Some(class) = line.f.strip_prefix("stop-")
            && let Some(mut interval) = open.remove(class)
        {
            interval.end = line.time;
            intervals.push(interval);
        }
    }
    for (_, mut interval) in open {
        interval.end = history.end;
        intervals.push(interval);
    }
    intervals.sort_by(|a, b| (a.start, &a.class).cmp(&(b.start, &b.class)));
    intervals
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = r#"{"format":"mnemo-history","version":1,"model":"etcd"}
{"type":"invoke","process":1,"time":100,"input":{"key":"k","f":"put","value":"v1"}}
{"type":"invoke","process":2,"time":150,"input":{"f":"txn"}}
{"type":"nemesis","time":200,"f":"start-kill","value":{"target":"n1"}}
{"type":"ok","process":1,"time":300,"output":{"f":"put","revision":2}}
{"type":"nemesis","time":350,"f":"start-pause","value":{"target":"n2","error":"no"}}
{"type":"info","process":2,"time":400}
{"type":"nemesis","time":500,"f":"stop-kill","value":{"target":"n1"}}
{"type":"invoke","process":3,"time":550,"input":{"key":"k","f":"get"}}
{"type":"nemesis","time":600,"f":"start-kill","value":{"target":"n3"}}
{"type":"nemesis","time":700,"f":"heal","value":{"errors":[]}}
{"type":"nemesis","time":750,"f":"start-partition","value":{"target":"n2"}}
{"type":"fail","process":9,"time":800}
{"type":"ok","process":1,"ti
"#;

    #[test]
    fn pairs_operations_generically_and_counts_bad_lines() {
        let history = read(LINES.as_bytes(), &BTreeSet::from(["k".to_owned()])).unwrap();
        assert_eq!(history.ops.len(), 3);
        let put = &history.ops[0];
        assert_eq!(
            (put.process, put.f.as_str(), put.key.as_deref()),
            (1, "put", Some("k"))
        );
        assert_eq!(
            (put.ret, put.outcome, put.latency()),
            (Some(300), OutcomeClass::Ok, Some(200))
        );
        assert_eq!(
            put.input["value"], "v1",
            "a detailed key keeps its payloads"
        );
        assert_eq!(put.output.as_ref().unwrap()["revision"], 2);
        let txn = &history.ops[1];
        assert_eq!(
            (txn.key.as_deref(), txn.outcome, txn.latency()),
            (None, OutcomeClass::Info, None)
        );
        let get = &history.ops[2];
        assert_eq!((get.ret, get.outcome), (None, OutcomeClass::Info));
        // The fail of a process with nothing open, and the torn last line.
        assert_eq!(history.skipped_lines, 2);
        assert_eq!(history.end, 800);
        assert_eq!(history.nemesis.len(), 6);
    }

    #[test]
    fn faults_pair_by_class_and_heal_and_end_close_them() {
        let history = read(LINES.as_bytes(), &BTreeSet::new()).unwrap();
        assert!(
            history
                .ops
                .iter()
                .all(|op| op.input.is_null() && op.output.is_none())
        );
        let intervals = fault_intervals(&history);
        let found: Vec<(&str, &str, Time, Time, bool)> = intervals
            .iter()
            .map(|i| {
                (
                    i.class.as_str(),
                    i.target.as_str(),
                    i.start,
                    i.end,
                    i.failed,
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("kill", "n1", 200, 500, false),
                ("pause", "n2", 350, 700, true),
                ("kill", "n3", 600, 700, false),
                ("partition", "n2", 750, 800, false),
            ]
        );
    }
}
