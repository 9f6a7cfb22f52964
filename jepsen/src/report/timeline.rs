//! The smallest failing piece of a non-linearizable key's history, drawn as a timeline.
//!
//! Owns the choice of the window (the operations on the failing key that overlap the first one
//! the checker could not linearize, and a bounded number that completed just before it) and its
//! drawing: one column per process, one box per operation from call to completion, open-ended
//! when the completion is unknown.
//! Must not: re-check anything; which operations form the linearizable prefix and which one was
//! blocked is the checker's word, read from `results.json`.
//!
//! Time runs down, by rank rather than to scale: every distinct call or completion time of the
//! shown operations gets a row, in order, so a 2 ms read next to a 2 s write stays legible and
//! what matters for linearizability, which intervals overlap, is exact (equal times share a row,
//! as closed intervals do).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::Value;

use super::escape;
use super::events::{OutcomeClass, ReportOp};
use crate::history::Time;

/// Operations of each function that completed before the blocked one started, shown at most:
/// the last few of each, so that the last writes show even when reads outnumber them ten to one
/// (the report cannot tell a write from a read, but it can tell their `f`s apart).
pub const EARLIER_OPS_PER_FUNCTION_MAX: usize = 3;
/// Operations overlapping the blocked one, shown at most (those whose calls are nearest its
/// call); with the default 6 workers a key rarely has more than a dozen.
pub const CONCURRENT_OPS_MAX: usize = 48;
/// Width of a process's column.
const COLUMN_PX: f64 = 230.0;
/// Height of one time rank.
const ROW_PX: f64 = 18.0;
/// Room for the time labels on the left.
const AXIS_PX: f64 = 64.0;
/// Room for the process names on top.
const HEADER_PX: f64 = 22.0;
/// How far below the last rank an open-ended box reaches.
const OPEN_TAIL_PX: f64 = 24.0;
/// Characters of a box's label line: what fits a column in 10 px monospace.
const LABEL_CHARS_MAX: usize = 36;

/// An operation as the checker named it: a process has one operation open at a time, so its
/// call time picks one out.
pub type OpId = (u64, Time);

/// What the checker said about the failing key.
#[derive(Clone, Debug, Default)]
pub struct Failure {
    /// The key.
    pub key: String,
    /// The longest linearizable prefix, in linearization order.
    pub prefix: Vec<OpId>,
    /// The operation that could not follow it.
    pub blocked: Option<OpId>,
    /// The model's state after the prefix, as the checker wrote it.
    pub state: Option<String>,
}

impl Failure {
    /// Reads `failing_key`, `prefix_ops` and `blocked_op` from a check's `results.json` entry.
    #[must_use]
    pub fn from_details(details: &Value) -> Option<Failure> {
        let id = |value: &Value| -> Option<OpId> {
            Some((
                value.get("process")?.as_u64()?,
                value.get("call")?.as_u64()?,
            ))
        };
        Some(Failure {
            key: details.get("failing_key")?.as_str()?.to_owned(),
            prefix: details
                .get("prefix_ops")
                .and_then(Value::as_array)
                .map(|ops| ops.iter().filter_map(id).collect())
                .unwrap_or_default(),
            blocked: details.get("blocked_op").and_then(id),
            state: details
                .get("prefix_state")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

/// The operations of the window, and how they were chosen.
#[derive(Debug)]
pub struct Window<'a> {
    /// Shown operations, by call time.
    pub ops: Vec<&'a ReportOp>,
    /// The blocked operation.
    pub blocked: &'a ReportOp,
    /// Operations on the key in the whole history.
    pub on_key: usize,
    /// Shown operations overlapping the blocked one (itself included).
    pub concurrent: usize,
    /// Shown operations that completed before it started.
    pub earlier: usize,
}

/// The window around `failure`'s blocked operation, or `None` when the history has no such
/// operation on the key.
#[must_use]
pub fn window<'a>(ops: &'a [ReportOp], failure: &Failure) -> Option<Window<'a>> {
    let (process, call) = failure.blocked?;
    let on_key: Vec<&ReportOp> = ops
        .iter()
        .filter(|op| op.key.as_deref() == Some(failure.key.as_str()))
        .collect();
    let blocked = *on_key
        .iter()
        .find(|op| op.process == process && op.call == call)?;
    let blocked_end = blocked.ret.unwrap_or(Time::MAX);
    // Closed intervals: touching counts as overlapping.
    let mut concurrent: Vec<&ReportOp> = on_key
        .iter()
        .copied()
        .filter(|op| op.call <= blocked_end && op.ret.unwrap_or(Time::MAX) >= blocked.call)
        .collect();
    concurrent.sort_by_key(|op| (op.call.abs_diff(blocked.call), op.process));
    concurrent.truncate(CONCURRENT_OPS_MAX);
    let mut earlier_by_function: BTreeMap<&str, Vec<&ReportOp>> = BTreeMap::new();
    for op in on_key.iter().rev() {
        if op.ret.is_some_and(|ret| ret < blocked.call) {
            let latest = earlier_by_function.entry(op.f.as_str()).or_default();
            if latest.len() < EARLIER_OPS_PER_FUNCTION_MAX {
                latest.push(op);
            }
        }
    }
    let earlier: Vec<&ReportOp> = earlier_by_function.into_values().flatten().collect();
    let (concurrent_count, earlier_count) = (concurrent.len(), earlier.len());
    let mut shown: Vec<&ReportOp> = concurrent.into_iter().chain(earlier).collect();
    shown.sort_by_key(|op| (op.call, op.process));
    Some(Window {
        ops: shown,
        blocked,
        on_key: on_key.len(),
        concurrent: concurrent_count,
        earlier: earlier_count,
    })
}

/// The window drawn as SVG.
#[must_use]
pub fn draw(window: &Window<'_>, failure: &Failure) -> String {
    let linearized: BTreeMap<OpId, usize> = failure
        .prefix
        .iter()
        .enumerate()
        .map(|(position, &id)| (id, position + 1))
        .collect();
    let times: BTreeSet<Time> = window
        .ops
        .iter()
        .flat_map(|op| std::iter::once(op.call).chain(op.ret))
        .collect();
    let rank: BTreeMap<Time, usize> = times.iter().enumerate().map(|(i, &t)| (t, i)).collect();
    let processes: Vec<u64> = window
        .ops
        .iter()
        .map(|op| op.process)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let row_y = |row: usize| {
        #[allow(clippy::cast_precision_loss)] // a few dozen rows
        let row = row as f64;
        HEADER_PX + row * ROW_PX
    };
    let ranks_bottom = row_y(times.len());
    let height = ranks_bottom + OPEN_TAIL_PX + 4.0;
    #[allow(clippy::cast_precision_loss)] // a few dozen columns
    let width = AXIS_PX + processes.len() as f64 * COLUMN_PX + 8.0;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width:.0} \
         {height:.0}\" width=\"{width:.0}\" height=\"{height:.0}\">"
    );
    for (row, &time) in times.iter().enumerate() {
        let y = row_y(row);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{AXIS_PX}\" y1=\"{y:.1}\" x2=\"{width:.0}\" y2=\"{y:.1}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{ty:.1}\" text-anchor=\"end\">{s:.3} s</text>",
            x = AXIS_PX - 4.0,
            ty = y + 11.0,
            s = seconds(time),
        );
    }
    for (column, process) in processes.iter().enumerate() {
        let _ = write!(
            out,
            "<text class=\"axis\" x=\"{x:.1}\" y=\"14\" text-anchor=\"middle\">process {process}</text>",
            x = column_x(column) + COLUMN_PX / 2.0,
        );
    }
    for op in &window.ops {
        let column = processes.binary_search(&op.process).unwrap_or(0);
        let x = column_x(column) + 3.0;
        let y0 = row_y(rank[&op.call]) + 1.0;
        let y1 = match op.ret {
            Some(ret) => row_y(rank[&ret] + 1) - 1.0,
            None => ranks_bottom + OPEN_TAIL_PX,
        };
        let id = (op.process, op.call);
        let role = if id == (window.blocked.process, window.blocked.call) {
            Role::Blocked
        } else if let Some(&position) = linearized.get(&id) {
            Role::Linearized(position)
        } else {
            Role::Other
        };
        draw_box(&mut out, op, role, x, (y0, y1));
    }
    out.push_str("</svg>\n");
    out
}

/// What the checker made of an operation in the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The first that could not be linearized.
    Blocked,
    /// In the longest linearizable prefix, at this position (from 1).
    Linearized(usize),
    /// Neither.
    Other,
}

/// One operation's box, at `x` from `ys.0` to `ys.1`, with its label and hover text.
fn draw_box(out: &mut String, op: &ReportOp, role: Role, x: f64, (y0, y1): (f64, f64)) {
    let (class, note, mark) = match role {
        Role::Blocked => (
            "blocked",
            "the first operation that cannot be linearized".to_owned(),
            String::new(),
        ),
        Role::Linearized(position) => (
            "linearized",
            format!("number {position} of the longest linearizable prefix"),
            format!("{position}. "),
        ),
        Role::Other => (
            "other",
            "not in the linearizable prefix".to_owned(),
            String::new(),
        ),
    };
    let open = if op.ret.is_none() { " open" } else { "" };
    let tip = format!(
        "process {} [{:.6} s, {}]\n{}\n-> {}\n{note}",
        op.process,
        seconds(op.call),
        op.ret.map_or_else(
            || "never".to_owned(),
            |ret| format!("{:.6} s", seconds(ret))
        ),
        op.input,
        op.output
            .as_ref()
            .map_or_else(|| op.outcome.name().to_owned(), Value::to_string),
    );
    let _ = write!(
        out,
        "<g class=\"box {class} {outcome}{open}\" data-process=\"{process}\" data-call=\"{call}\">\
         <title>{tip}</title><rect x=\"{x:.1}\" y=\"{y0:.1}\" width=\"{w:.1}\" \
         height=\"{h:.1}\" rx=\"3\"/>",
        outcome = op.outcome.name(),
        process = op.process,
        call = op.call,
        tip = escape(&tip),
        w = COLUMN_PX - 6.0,
        h = (y1 - y0).max(ROW_PX - 2.0),
    );
    let (input, output) = (describe(&op.input), outcome_text(op));
    let lines = if y1 - y0 >= 2.0 * ROW_PX - 2.0 {
        vec![format!("{mark}{} {input}", op.f), format!("-> {output}")]
    } else {
        vec![format!("{mark}{} {input} -> {output}", op.f)]
    };
    for (line, text) in lines.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)] // one or two lines
        let ty = y0 + 12.0 + line as f64 * 14.0;
        let _ = write!(
            out,
            "<text x=\"{tx:.1}\" y=\"{ty:.1}\">{}</text>",
            escape(&truncate(text, LABEL_CHARS_MAX)),
            tx = x + 4.0,
        );
    }
    out.push_str("</g>");
}

/// The CSS of the timeline's boxes.
#[must_use]
pub fn style() -> &'static str {
    ".timeline text{font:10px monospace}.timeline .axis{font:11px sans-serif}\
     .box rect{fill:#f2f2f2;stroke:#888}.box.linearized rect{fill:#d9f0d3;stroke:#1b7837}\
     .box.blocked rect{fill:#fddbc7;stroke:#b2182b;stroke-width:2.5}\
     .box.fail rect{fill:#fff;stroke-dasharray:2 2}.box.open rect{stroke-dasharray:6 3}\n"
}

fn column_x(column: usize) -> f64 {
    #[allow(clippy::cast_precision_loss)] // a few dozen columns
    let column = column as f64;
    AXIS_PX + column * COLUMN_PX
}

/// An input or output for a box label, without its `f` and `key`: `value=v3 prev_kv=true`. A
/// nested object with a `value` (a key-value) shows just that, which is what a reader compares;
/// the hover text has everything.
fn describe(value: &Value) -> String {
    match value {
        Value::Object(fields) => fields
            .iter()
            .filter(|(name, _)| name.as_str() != "f" && name.as_str() != "key")
            .map(|(name, value)| match value {
                Value::String(text) => format!("{name}={text}"),
                Value::Object(inner) => match inner.get("value") {
                    Some(Value::String(text)) => format!("{name}={text}"),
                    _ => format!("{name}={value}"),
                },
                other => format!("{name}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn outcome_text(op: &ReportOp) -> String {
    match (op.outcome, &op.output) {
        (OutcomeClass::Ok, Some(output)) => describe(output),
        (OutcomeClass::Ok, None) => "ok".to_owned(),
        (OutcomeClass::Fail, _) => "fail".to_owned(),
        (OutcomeClass::Info, _) => "unknown".to_owned(),
    }
}

fn truncate(text: &str, chars_max: usize) -> String {
    if text.chars().count() <= chars_max {
        return text.to_owned();
    }
    let mut kept: String = text.chars().take(chars_max - 1).collect();
    kept.push('…');
    kept
}

#[allow(clippy::cast_precision_loss)] // ns of one run
fn seconds(ns: Time) -> f64 {
    ns as f64 / 1e9
}
