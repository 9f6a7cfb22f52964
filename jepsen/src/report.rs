//! The run report: what a person reads after a run, written beside its `results.json`.
//!
//! Owns three things in a run directory and one beside it (jepsen.md §6.5):
//! - `summary.txt`: [`TestReport::summary`], the fault intervals, and for an invalid run every
//!   failing check's explanation;
//! - `report.html`: one self-contained page (inline SVG and CSS, no scripts, nothing fetched)
//!   with the verdicts, the outcome counts, three charts over time with the faults shaded
//!   ([`plots`]: every operation's latency, latency quantiles, throughput), and for a check that
//!   names a failing key, a timeline of the smallest failing piece of that key's history
//!   ([`timeline`]);
//! - the store's `latest` link, pointing at the newest run.
//!
//! [`write`] is called by the run as soon as `results.json` exists; [`regenerate`] rebuilds the
//! same files for an old run from its `results.json` and `history.jsonl` (`mnemo-jepsen report`),
//! through the same [`write_files`], so an improved report can be had for any kept run.
//!
//! Must not: change a verdict or any file the run wrote (`history.jsonl`, `results.json`,
//! `test.json`, the members' files); it only reads them. A failure here is the report's, never
//! the run's: the caller logs it and keeps the verdict. The history is read in no workload's
//! vocabulary ([`events`]), so every workload gets the same report from its operations' `f`.

pub mod events;
pub mod plots;
pub mod timeline;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::nemesis::NemesisReport;
use crate::run::TestReport;
use crate::workload::{CheckResult, Counts, Validity};
use events::{FaultInterval, RunHistory};

/// The summary's file name in a run directory.
pub const SUMMARY_FILE: &str = "summary.txt";
/// The page's file name in a run directory.
pub const HTML_FILE: &str = "report.html";
/// The link in the store directory that points at the newest run.
pub const LATEST_LINK: &str = "latest";
/// Files of the run this module reads.
const HISTORY_FILE: &str = "history.jsonl";
const RESULTS_FILE: &str = "results.json";
const TEST_FILE: &str = "test.json";
/// Characters of a `test.json` value shown in the page's header table.
const SETTING_CHARS_MAX: usize = 160;
/// Checks that every run adds after the workload's own; a regenerated report lists them last,
/// as the run did (`results.json` keeps no order).
const SHARED_CHECKS: [&str; 2] = ["stats", "logs"];
/// Top-level fields of `results.json` that are not checks.
const RESULTS_FIELDS: [&str; 6] = [
    "valid",
    "counts",
    "reasons",
    "faults_started",
    "nemesis_errors",
    "elapsed_secs",
];

/// Writes `summary.txt` and `report.html` into `run_dir` and points the store's `latest` link
/// at it. Call it once `results.json` has been written.
///
/// # Errors
/// When the history cannot be read or a file cannot be written.
pub fn write(run_dir: &Path, report: &TestReport) -> anyhow::Result<()> {
    write_files(run_dir, report)?;
    link_latest(run_dir)
}

/// Rebuilds `summary.txt` and `report.html` of the finished run in `run_dir` from its
/// `results.json` and `history.jsonl`, and returns the report read back. The `latest` link is
/// left alone: an old run is not the newest.
///
/// # Errors
/// When `results.json` is missing or malformed, or a file cannot be read or written.
pub fn regenerate(run_dir: &Path) -> anyhow::Result<TestReport> {
    // `<store>/latest` names the run by its timestamp once resolved.
    let run_dir = run_dir
        .canonicalize()
        .with_context(|| format!("find {}", run_dir.display()))?;
    let report = read_results(&run_dir)?;
    write_files(&run_dir, &report)?;
    Ok(report)
}

/// What [`write`] and [`regenerate`] share: read the history, write both files.
fn write_files(run_dir: &Path, report: &TestReport) -> anyhow::Result<()> {
    let history_path = run_dir.join(HISTORY_FILE);
    let history = if history_path.exists() {
        let file = File::open(&history_path)
            .with_context(|| format!("open {}", history_path.display()))?;
        // Only the keys a timeline will show need their operations' inputs and outputs.
        let failing_keys: BTreeSet<String> = report
            .checks
            .iter()
            .filter_map(|check| {
                check
                    .details
                    .get("failing_key")?
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        events::read(BufReader::new(file), &failing_keys)
            .with_context(|| format!("read {}", history_path.display()))?
    } else {
        RunHistory::default()
    };
    // Only for the request timeout line and the settings table; a run without it still gets a
    // report.
    let test: Option<Value> = std::fs::read_to_string(run_dir.join(TEST_FILE))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let faults = events::fault_intervals(&history);
    let summary = summary_text(report, &faults);
    let summary_path = run_dir.join(SUMMARY_FILE);
    std::fs::write(&summary_path, &summary)
        .with_context(|| format!("write {}", summary_path.display()))?;
    let title = run_dir.file_name().map_or_else(
        || run_dir.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    let html = render_html(&title, report, &history, test.as_ref(), &summary);
    let html_path = run_dir.join(HTML_FILE);
    std::fs::write(&html_path, html).with_context(|| format!("write {}", html_path.display()))
}

/// Points `<store>/latest` at `run_dir`, by its name so that the store can be moved. The new
/// link is made under a temporary name and renamed over the old, so a reader never finds the
/// link missing.
fn link_latest(run_dir: &Path) -> anyhow::Result<()> {
    let (Some(store), Some(name)) = (run_dir.parent(), run_dir.file_name()) else {
        anyhow::bail!("{} has no parent to hold a link", run_dir.display());
    };
    let temporary = store.join(format!(".{LATEST_LINK}.{}.tmp", std::process::id()));
    // A leftover from a harness killed between the two steps below.
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(name, &temporary)
        .with_context(|| format!("create {}", temporary.display()))?;
    let link = store.join(LATEST_LINK);
    std::fs::rename(&temporary, &link).with_context(|| format!("replace {}", link.display()))
}

/// `summary.txt`: the run's own summary, then the faults, then what the failing checks found.
#[must_use]
pub fn summary_text(report: &TestReport, faults: &[FaultInterval]) -> String {
    let mut text = report.summary();
    if !faults.is_empty() {
        text.push_str("faults:\n");
        for fault in faults {
            let _ = writeln!(
                text,
                "  {:>8.2} s to {:>8.2} s  {} {}{}",
                seconds(fault.start),
                seconds(fault.end),
                fault.class,
                fault.target,
                if fault.failed { " (failed)" } else { "" }
            );
        }
    }
    if report.validity == Validity::Invalid {
        text.push_str(&report.explanations());
    }
    text
}

/// Reads `results.json` back into the report the run had, as far as the file keeps it: checks
/// come back with everything but their order (the workload's first, by name, then the shared
/// ones), counts with their reasons.
///
/// # Errors
/// When the file is missing or not the JSON object a run writes.
pub fn read_results(run_dir: &Path) -> anyhow::Result<TestReport> {
    let path = run_dir.join(RESULTS_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let results: Value =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let fields = results
        .as_object()
        .with_context(|| format!("{} is not a JSON object", path.display()))?;
    let mut counts = Counts::default();
    for (name, count) in fields
        .get("counts")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let (Some((f, class)), Some(count)) = (name.rsplit_once(':'), count.as_u64()) {
            counts
                .by_function
                .insert((f.to_owned(), class.to_owned()), count);
        }
    }
    if let Some(reasons) = fields.get("reasons") {
        counts.reasons = serde_json::from_value(reasons.clone()).unwrap_or_default();
    }
    let strings = |name: &str| -> Vec<String> {
        fields
            .get(name)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut checks: Vec<CheckResult> = fields
        .iter()
        .filter(|(name, _)| !RESULTS_FIELDS.contains(&name.as_str()))
        .filter_map(|(name, entry)| {
            let entry = entry.as_object()?;
            let mut details = entry.clone();
            let validity = validity_from_json(&details.remove("valid")?);
            let summary = details.remove("summary")?.as_str()?.to_owned();
            Some(CheckResult {
                name: name.clone(),
                validity,
                summary,
                details: Value::Object(details),
            })
        })
        .collect();
    checks.sort_by_key(|check| {
        let shared = SHARED_CHECKS.iter().position(|name| *name == check.name);
        (
            shared.map_or(0, |position| position + 1),
            check.name.clone(),
        )
    });
    Ok(TestReport {
        run_dir: run_dir.to_path_buf(),
        validity: validity_from_json(fields.get("valid").unwrap_or(&Value::Null)),
        checks,
        counts,
        nemesis: NemesisReport {
            started: strings("faults_started"),
            errors: strings("nemesis_errors"),
        },
        elapsed: fields
            .get("elapsed_secs")
            .and_then(Value::as_f64)
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .unwrap_or_default(),
    })
}

/// The inverse of [`Validity::as_json`].
fn validity_from_json(value: &Value) -> Validity {
    match value {
        Value::Bool(true) => Validity::Valid,
        Value::Bool(false) => Validity::Invalid,
        _ => Validity::Unknown,
    }
}

/// The whole page, from what the run found, its history, and its settings.
#[must_use]
pub fn render_html(
    title: &str,
    report: &TestReport,
    history: &RunHistory,
    test: Option<&Value>,
    summary: &str,
) -> String {
    let faults = events::fault_intervals(history);
    let frame = plots::Frame::new(history, &faults);
    let functions = plots::functions(&history.ops);
    let timeout_ms = test
        .and_then(|test| test.get("request_timeout_secs"))
        .and_then(Value::as_f64)
        .map(|secs| secs * 1000.0);
    let verdict = validity_name(report.validity);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{verdict}: mnemo-jepsen run {title}</title><style>{page}{charts}{timeline}\
         </style></head><body>\n<h1>Run {title}: <span class=\"{verdict}\">{verdict}</span></h1>\n",
        title = escape(title),
        page = PAGE_STYLE,
        charts = plots::style(),
        timeline = timeline::style(),
    );
    settings_table(&mut html, test, report);
    checks_table(&mut html, &report.checks);
    counts_table(&mut html, &report.counts);
    faults_section(&mut html, &faults, &report.nemesis);

    html.push_str("<h2>Latency</h2>\n");
    html.push_str(&plots::legend(&functions));
    let (chart, shown, completed) =
        plots::latency_chart(history, &frame, &faults, &functions, timeout_ms);
    if shown < completed {
        let _ = writeln!(
            html,
            "<p class=\"note\">{shown} of {completed} completed operations drawn, sampled evenly \
             (at most {} points); the other charts count every operation.</p>",
            plots::POINTS_MAX
        );
    }
    html.push_str(&chart);
    let bucket_secs = seconds(frame.bucket_ns());
    let _ = writeln!(
        html,
        "<h2>Latency quantiles</h2>\n<p class=\"note\">Per {bucket_secs} s bucket of call time, \
         over operations with a response (ok or fail).</p>"
    );
    html.push_str(&plots::quantile_chart(history, &frame, &faults));
    let _ = writeln!(
        html,
        "<h2>Throughput</h2>\n<p class=\"note\">Operations per second by call time, per \
         {bucket_secs} s bucket.</p>"
    );
    html.push_str(&plots::rate_chart(history, &frame, &faults, &functions));
    if history.skipped_lines > 0 {
        let _ = writeln!(
            html,
            "<p class=\"note\">{} lines of the history could not be read and were skipped.</p>",
            history.skipped_lines
        );
    }

    for check in &report.checks {
        if check.validity == Validity::Invalid {
            violation_section(&mut html, check, history);
        }
    }
    let _ = writeln!(
        html,
        "<h2>Summary</h2>\n<pre>{}</pre>\n</body></html>",
        escape(summary)
    );
    html
}

/// The page's own CSS (the charts and the timeline add theirs).
const PAGE_STYLE: &str = "body{font:14px sans-serif;margin:1em 2em;color:#222}\
     h1{font-size:20px}h2{font-size:16px;margin-top:1.6em}\
     table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;\
     vertical-align:top}td.n{text-align:right}.valid{color:#1b7837}.invalid{color:#b2182b}\
     .unknown{color:#b35806}.note,.legend{color:#555;font-size:12px}\
     pre{background:#f6f6f6;padding:6px;max-height:32em;overflow:auto;font-size:12px}\
     svg{max-width:100%;height:auto;display:block}.scroll{overflow:auto;max-height:60em}\
     .scroll svg{max-width:none}\n";

fn validity_name(validity: Validity) -> &'static str {
    match validity {
        Validity::Valid => "valid",
        Validity::Invalid => "invalid",
        Validity::Unknown => "unknown",
    }
}

fn settings_table(html: &mut String, test: Option<&Value>, report: &TestReport) {
    html.push_str("<table class=\"settings\">");
    for (name, value) in test.and_then(Value::as_object).into_iter().flatten() {
        let value = match value {
            Value::String(string) => string.clone(),
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map_or_else(|| item.to_string(), str::to_owned)
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        let value: String = value.chars().take(SETTING_CHARS_MAX).collect();
        let _ = write!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    }
    let _ = writeln!(
        html,
        "<tr><th>elapsed</th><td>{:.1} s</td></tr></table>",
        report.elapsed.as_secs_f64()
    );
}

fn checks_table(html: &mut String, checks: &[CheckResult]) {
    html.push_str(
        "<h2>Checks</h2>\n<table><tr><th>check</th><th>verdict</th><th>summary</th></tr>",
    );
    for check in checks {
        let verdict = validity_name(check.validity);
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"{verdict}\">{verdict}</td><td>{}</td></tr>",
            escape(&check.name),
            escape(&check.summary)
        );
    }
    html.push_str("</table>\n");
}

fn counts_table(html: &mut String, counts: &Counts) {
    let mut by_function: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
    for ((f, class), count) in &counts.by_function {
        let column = match class.as_str() {
            "ok" => 0,
            "fail" => 1,
            _ => 2,
        };
        by_function.entry(f.as_str()).or_default()[column] += count;
    }
    html.push_str(
        "<h2>Operations</h2>\n<table><tr><th>function</th><th>ok</th><th>fail</th><th>info</th></tr>",
    );
    for (f, [ok, fail, info]) in &by_function {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"n\">{ok}</td><td class=\"n\">{fail}</td>\
             <td class=\"n\">{info}</td></tr>",
            escape(f)
        );
    }
    html.push_str("</table>\n");
    for (class, reasons) in &counts.reasons {
        for (reason, count) in reasons {
            let _ = write!(
                html,
                "<div class=\"note\">{} &times;{count}: {}</div>",
                escape(class),
                escape(reason)
            );
        }
    }
}

fn faults_section(html: &mut String, faults: &[FaultInterval], nemesis: &NemesisReport) {
    html.push_str("<h2>Faults</h2>\n");
    if faults.is_empty() {
        html.push_str("<p>none</p>\n");
    } else {
        html.push_str(
            "<table><tr><th>fault</th><th>target</th><th>from (s)</th><th>to (s)</th></tr>",
        );
        for fault in faults {
            let _ = write!(
                html,
                "<tr><td><span style=\"color:{}\">&#9632;</span> {}{}</td><td>{}</td>\
                 <td class=\"n\">{:.2}</td><td class=\"n\">{:.2}</td></tr>",
                plots::fault_colour(&fault.class),
                escape(&fault.class),
                if fault.failed { " (failed)" } else { "" },
                escape(&fault.target),
                seconds(fault.start),
                seconds(fault.end)
            );
        }
        html.push_str("</table>\n");
    }
    for error in &nemesis.errors {
        let _ = writeln!(
            html,
            "<p class=\"invalid\">nemesis error: {}</p>",
            escape(error)
        );
    }
}

/// An invalid check: its explanation, and when it names a failing key, the timeline.
fn violation_section(html: &mut String, check: &CheckResult, history: &RunHistory) {
    let _ = writeln!(
        html,
        "<h2>Violation found by {}</h2>\n<p>{}</p>",
        escape(&check.name),
        escape(&check.summary)
    );
    let Some(failure) = timeline::Failure::from_details(&check.details) else {
        explanation(html, check);
        return;
    };
    match timeline::window(&history.ops, &failure) {
        Some(window) => {
            let _ = writeln!(
                html,
                "<p>Key <code>{key}</code>: {shown} of its {all} operations, those overlapping \
                 the first operation that could not be linearized (process {process}, red), and \
                 the last {earlier_max} of each function that completed before it ({earlier} \
                 here). Green boxes are in the longest linearizable prefix the checker found, \
                 numbered in its order ({prefix} operations in all); dashed boxes never \
                 completed (unknown) or failed. Time runs down, by order of events rather than \
                 to scale; hover a box for its request and response.</p>",
                key = escape(&failure.key),
                shown = window.ops.len(),
                all = window.on_key,
                process = window.blocked.process,
                earlier = window.earlier,
                earlier_max = timeline::EARLIER_OPS_PER_FUNCTION_MAX,
                prefix = failure.prefix.len(),
            );
            if let Some(state) = &failure.state {
                let _ = writeln!(
                    html,
                    "<p>Model state after the prefix: <code>{}</code></p>",
                    escape(state)
                );
            }
            html.push_str("<div class=\"scroll\">");
            html.push_str(&timeline::draw(&window, &failure));
            html.push_str("</div>\n");
        }
        None => {
            let _ = writeln!(
                html,
                "<p class=\"note\">The operation the checker blocked on is not in the history \
                 of key <code>{}</code>; no timeline.</p>",
                escape(&failure.key)
            );
        }
    }
    explanation(html, check);
}

fn explanation(html: &mut String, check: &CheckResult) {
    if let Some(text) = check.details.get("explanation").and_then(Value::as_str) {
        let _ = writeln!(
            html,
            "<details open><summary>The checker's explanation</summary><pre>{}</pre></details>",
            escape(text)
        );
    }
}

/// `text` safe inside HTML or SVG text and attribute values.
#[must_use]
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

#[allow(clippy::cast_precision_loss)] // ns of one run
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests;
