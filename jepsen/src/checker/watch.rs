//! The watch checker: judges what watchers received against the history the collectors saw and
//! the writes the clients had acknowledged (jepsen.md §2.5).
//!
//! Owns the watch workload's recorded vocabulary (the writers' [`WriteInput`]/[`WriteOutput`] in
//! `history.jsonl`, and [`WatchLine`], one line of `watch.jsonl`), its readers, and the verdict.
//! Must not: talk to members or know how the lines were obtained; it is a pure function of the two
//! files, so a saved run can be judged again offline.
//!
//! # Terms
//! - A *watcher* is one logical client. It works in *segments*: each is one watch stream on one
//!   member from a requested start revision, until the client drops it. A segment that starts
//!   where the previous one left off is a *resume*; one that starts earlier (a *rewind*) begins a
//!   new *run*. Ordering and uniqueness hold along a run, across the resumes in it.
//! - *Collectors* are watchers of the whole prefix from revision 1 (one per member), started
//!   after the writers stopped. The union of what they received, over the revisions they
//!   covered, is the *truth*; they must agree with each other, and the acknowledged writes must
//!   be in it.
//! - A segment *covers* the revisions from its start up to the highest revision it was given an
//!   event of or a progress notification for: every matching event there must have arrived.
//!
//! # Guarantees
//! Each violation is counted under exactly one of these names; an event that breaks one of the
//! first three is not judged further.
//! - `filter`: an event outside the watched prefix, or of a type the watcher filtered out.
//! - `resumable`: a segment began with an event below its start revision, or skipped matching
//!   events between its start and its first event (or its first progress notification). A
//!   compaction notice is a legitimate beginning.
//! - `unique`: a (revision, key) delivered twice within a run.
//! - `ordered`: an event revision lower than one already delivered in the run.
//! - `atomic`: the events of one revision spread over more than one response (fragments joined).
//! - `bookmarkable`: an event at or below the revision of a progress notification received
//!   earlier in the same segment.
//! - `reliable`: a matching event of the truth, inside a segment's coverage after its first
//!   event, that never arrived.
//! - `prev_kv`: a `prev_kv` that is not the key's version just before the event (or is there
//!   when the key did not exist, or was not asked for). A missing one is allowed only if that
//!   version had been compacted.
//! - `same_history`: an event whose content (type, value, create revision, version) differs
//!   from what the truth (or, beyond it, another watcher) has at that revision and key, or that
//!   the truth does not have at all; two collectors disagreeing.
//! - `writes`: an acknowledged write missing from the truth at its revision, or sharing it with
//!   other changes; a put event whose value no client wrote to that key, or whose write failed.
//! - `is_create`: in the truth, a put whose create revision and version do not follow from the
//!   key's previous state (a creation has version 1 and its own revision as create revision, an
//!   update keeps the create revision and adds one to the version), or a delete of a key that
//!   did not exist. Every watcher's events are compared with the truth's, so this is judged once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::history::Time;
use crate::history::jsonl::{FORMAT_NAME, FORMAT_VERSION, Header, ModelName};
use crate::workload::{CheckResult, Validity};

/// An etcd revision.
pub type Revision = i64;

/// Violations described one by one in the explanation; the rest are only counted.
const EXPLAINED_MAX: usize = 20;

/// A writer's request, one `invoke` line's `input`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum WriteInput {
    /// Put a value never written before.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete one key.
    Delete {
        /// The key.
        key: String,
    },
    /// One Txn without compares, changing several distinct keys in one revision; at least one
    /// of its operations is a put, so it always makes a revision.
    Txn {
        /// The operations, in order.
        ops: Vec<TxnOp>,
    },
    /// Compact history below this revision; makes no revision, changes no key.
    Compact {
        /// The compact revision.
        revision: Revision,
    },
}

/// One operation of a [`WriteInput::Txn`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum TxnOp {
    /// Put a value never written before.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete the key (which may not exist).
    Delete {
        /// The key.
        key: String,
    },
}

/// A writer's result, one `ok` line's `output`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum WriteOutput {
    /// The put's header revision: the revision it made.
    Put {
        /// The revision.
        revision: Revision,
    },
    /// The delete's header revision, which it made only if it deleted something.
    Delete {
        /// The revision.
        revision: Revision,
        /// Keys deleted.
        deleted: i64,
    },
    /// The txn's header revision: the revision it made.
    Txn {
        /// The revision.
        revision: Revision,
    },
    /// The compaction's header revision (the current one; compaction makes none).
    Compact {
        /// The revision.
        revision: Revision,
    },
}

/// How a write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// It happened, with this result.
    Ok(WriteOutput),
    /// It certainly did not happen.
    Fail,
    /// It may or may not have happened.
    Unknown,
}

/// One write and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The request.
    pub input: WriteInput,
    /// How it ended.
    pub outcome: WriteOutcome,
}

/// The kind of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A put.
    Put,
    /// A delete.
    Delete,
}

/// A key's version as a watch event's `prev_kv` carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrevKv {
    /// The value.
    pub value: String,
    /// The revision that created the key's current life.
    pub create_revision: Revision,
    /// The revision that wrote this version.
    pub mod_revision: Revision,
    /// Writes to the key since its creation, this one included.
    pub version: i64,
}

/// One event of a watch response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Put or delete.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The key.
    pub key: String,
    /// The value written (empty for a delete).
    pub value: String,
    /// The key's create revision (0 for a delete).
    pub create_revision: Revision,
    /// The event's revision.
    pub mod_revision: Revision,
    /// The key's version (0 for a delete).
    pub version: i64,
    /// The key's previous version, when asked for and there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_kv: Option<PrevKv>,
}

/// One line of `watch.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum WatchLine {
    /// A segment began: its stream was opened with this create request.
    Segment(SegmentStart),
    /// A response arrived on a segment's stream.
    Response(ResponseLine),
    /// A segment ended: the client dropped its stream.
    End(SegmentEnd),
}

/// A segment's beginning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "the flags of etcd's wire message, one each"
)]
pub struct SegmentStart {
    /// The watcher.
    pub watcher: u64,
    /// The segment's number, counting from 0 per watcher.
    pub segment: u64,
    /// Whether the watcher is a collector (its segments make the truth).
    pub collector: bool,
    /// The member's index.
    pub member: usize,
    /// When the create was sent, ns since the run started.
    pub time: Time,
    /// Every key with this prefix is watched.
    pub prefix: String,
    /// The requested start revision (never 0: the workload always names one).
    pub start_revision: Revision,
    /// It starts where the watcher's previous segment left off (false for the first segment and
    /// for rewinds).
    pub resume: bool,
    /// The NOPUT filter.
    pub no_put: bool,
    /// The NODELETE filter.
    pub no_delete: bool,
    /// `prev_kv` was asked for.
    pub prev_kv: bool,
}

/// A response as it arrived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "the flags of etcd's wire message, one each"
)]
pub struct ResponseLine {
    /// The watcher.
    pub watcher: u64,
    /// Its segment.
    pub segment: u64,
    /// The member's index.
    pub member: usize,
    /// When it arrived, ns since the run started.
    pub time: Time,
    /// The response header's revision.
    pub header_revision: Revision,
    /// The watch id it names.
    pub watch_id: i64,
    /// It answers the create.
    pub created: bool,
    /// The watcher is gone.
    pub canceled: bool,
    /// Non-zero when the watcher was cancelled because its next revision was compacted.
    pub compact_revision: Revision,
    /// Why it was cancelled.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cancel_reason: String,
    /// More parts of the same response follow.
    pub fragment: bool,
    /// It is a progress notification, as a client tells one: no events, neither created nor
    /// cancelled, no compact revision, a non-zero header revision. Recorded for readers; the
    /// checker decides from the fields.
    pub progress: bool,
    /// The events.
    pub events: Vec<WatchEvent>,
}

impl ResponseLine {
    /// Whether a client takes it for a progress notification.
    #[must_use]
    pub fn is_progress(&self) -> bool {
        self.events.is_empty()
            && !self.created
            && !self.canceled
            && self.compact_revision == 0
            && self.header_revision != 0
    }
}

/// A segment's end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEnd {
    /// The watcher.
    pub watcher: u64,
    /// Its segment.
    pub segment: u64,
    /// When, ns since the run started.
    pub time: Time,
    /// Why: `timer`, `converged`, `compacted`, `canceled: ...`, `error: ...`, `closed`.
    pub reason: String,
}

/// The guarantees, as counted in the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Guarantee {
    /// Revisions never go back along a run.
    Ordered,
    /// No (revision, key) twice along a run.
    Unique,
    /// One revision, one response.
    Atomic,
    /// Nothing at or below a progress notification arrives after it.
    Bookmarkable,
    /// No gaps inside a segment's coverage.
    Reliable,
    /// A segment starts exactly at its start revision.
    Resumable,
    /// `prev_kv` is the key's previous version.
    PrevKv,
    /// Only matching events.
    Filter,
    /// Everyone saw the same events.
    SameHistory,
    /// The acknowledged writes are the history.
    Writes,
    /// Create revisions and versions follow from the key's previous state.
    IsCreate,
}

impl Guarantee {
    /// Every guarantee, in the order the verdict lists them.
    pub const ALL: [Guarantee; 11] = [
        Guarantee::Ordered,
        Guarantee::Unique,
        Guarantee::Atomic,
        Guarantee::Bookmarkable,
        Guarantee::Reliable,
        Guarantee::Resumable,
        Guarantee::PrevKv,
        Guarantee::Filter,
        Guarantee::SameHistory,
        Guarantee::Writes,
        Guarantee::IsCreate,
    ];

    /// Its name in `results.json`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::Ordered => "ordered",
            Guarantee::Unique => "unique",
            Guarantee::Atomic => "atomic",
            Guarantee::Bookmarkable => "bookmarkable",
            Guarantee::Reliable => "reliable",
            Guarantee::Resumable => "resumable",
            Guarantee::PrevKv => "prev_kv",
            Guarantee::Filter => "filter",
            Guarantee::SameHistory => "same_history",
            Guarantee::Writes => "writes",
            Guarantee::IsCreate => "is_create",
        }
    }
}

/// One broken guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which.
    pub guarantee: Guarantee,
    /// Where: `watcher 3 segment 5 (n2)`, or `writes`.
    pub place: String,
    /// The revision concerned.
    pub revision: Revision,
    /// Expected versus got.
    pub text: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} at revision {}: {}",
            self.guarantee.name(),
            self.place,
            self.revision,
            self.text
        )
    }
}

/// What the checker looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WatchStats {
    /// Watchers, collectors excluded.
    pub watchers: u64,
    /// Collectors.
    pub collectors: u64,
    /// Segments of all of them.
    pub segments: u64,
    /// Segments that resumed where the previous one left off.
    pub resumes: u64,
    /// Segments that started earlier.
    pub rewinds: u64,
    /// Responses (fragments joined).
    pub responses: u64,
    /// Events delivered to all of them.
    pub events: u64,
    /// Progress notifications.
    pub progress_notifications: u64,
    /// Compaction notices.
    pub compactions: u64,
    /// Revisions with events in the truth.
    pub truth_revisions: u64,
    /// Events in the truth.
    pub truth_events: u64,
    /// The revision ranges the truth covers.
    pub truth_covered: Vec<(Revision, Revision)>,
    /// Acknowledged writes checked against the truth.
    pub writes_checked: u64,
    /// Acknowledged writes beyond the truth's coverage.
    pub writes_unchecked: u64,
}

/// The checker's findings.
#[derive(Clone, Debug, Default)]
pub struct WatchCheck {
    /// Every violation found.
    pub violations: Vec<Violation>,
    /// What was looked at.
    pub stats: WatchStats,
}

impl WatchCheck {
    /// Violations of `guarantee`.
    #[must_use]
    pub fn count(&self, guarantee: Guarantee) -> usize {
        self.violations
            .iter()
            .filter(|violation| violation.guarantee == guarantee)
            .count()
    }

    /// The guarantees violated at least once.
    #[must_use]
    pub fn broken(&self) -> Vec<Guarantee> {
        Guarantee::ALL
            .into_iter()
            .filter(|&guarantee| self.count(guarantee) > 0)
            .collect()
    }

    /// The verdict as `results.json` holds it.
    #[must_use]
    pub fn to_check_result(&self, check_secs: f64) -> CheckResult {
        let stats = &self.stats;
        let mut by_guarantee = serde_json::Map::new();
        for guarantee in Guarantee::ALL {
            by_guarantee.insert(guarantee.name().to_owned(), json!(self.count(guarantee)));
        }
        let mut details = json!({
            "violations": by_guarantee,
            "stats": stats,
            "check_secs": check_secs,
        });
        let seen = format!(
            "{} watchers and {} collectors, {} segments ({} resumes, {} rewinds), {} events, \
             {} progress notifications, {} acknowledged writes checked",
            stats.watchers,
            stats.collectors,
            stats.segments,
            stats.resumes,
            stats.rewinds,
            stats.events,
            stats.progress_notifications,
            stats.writes_checked
        );
        if self.violations.is_empty() {
            return CheckResult {
                name: "watch".to_owned(),
                validity: Validity::Valid,
                summary: format!("every watch guarantee held ({seen})"),
                details,
            };
        }
        let broken: Vec<String> = self
            .broken()
            .into_iter()
            .map(|guarantee| format!("{} ×{}", guarantee.name(), self.count(guarantee)))
            .collect();
        let mut explanation: Vec<String> = self
            .violations
            .iter()
            .take(EXPLAINED_MAX)
            .map(ToString::to_string)
            .collect();
        if self.violations.len() > EXPLAINED_MAX {
            explanation.push(format!(
                "... and {} more",
                self.violations.len() - EXPLAINED_MAX
            ));
        }
        details["explanation"] = json!(explanation.join("\n"));
        CheckResult {
            name: "watch".to_owned(),
            validity: Validity::Invalid,
            summary: format!("watch guarantees broken: {} ({seen})", broken.join(", ")),
            details,
        }
    }
}

/// Reads the writers' history (`history.jsonl` with the `watch` model). An invoke never
/// completed is unknown; `nemesis` lines are skipped.
///
/// # Errors
/// On I/O failure, a bad header or a line that does not parse.
pub fn parse_writes(reader: impl BufRead) -> anyhow::Result<Vec<Write>> {
    let mut lines = reader.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        bail!("empty history: expected a header line");
    };
    let header: Header = serde_json::from_str(&header?).context("bad header")?;
    if header.format != FORMAT_NAME
        || header.version != FORMAT_VERSION
        || header.model != ModelName::Watch
    {
        bail!("not a {FORMAT_NAME} version {FORMAT_VERSION} history of the watch workload");
    }
    let mut open: HashMap<u64, WriteInput> = HashMap::new();
    let mut writes = Vec::new();
    for (index, line) in lines {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("history line {}", index + 1);
        let raw: serde_json::Value = serde_json::from_str(&line).with_context(at)?;
        let kind = raw.get("type").and_then(serde_json::Value::as_str);
        let process = raw.get("process").and_then(serde_json::Value::as_u64);
        let (Some(kind), Some(process)) = (kind, process) else {
            // nemesis lines, and whatever else the harness interleaves.
            continue;
        };
        match kind {
            "invoke" => {
                let input = serde_json::from_value(raw["input"].clone()).with_context(at)?;
                open.insert(process, input);
            }
            "ok" | "fail" | "info" => {
                let input = open
                    .remove(&process)
                    .with_context(|| format!("{}: no open operation", at()))?;
                let outcome = match kind {
                    "ok" => WriteOutcome::Ok(
                        serde_json::from_value(raw["output"].clone()).with_context(at)?,
                    ),
                    "fail" => WriteOutcome::Fail,
                    _ => WriteOutcome::Unknown,
                };
                writes.push(Write { input, outcome });
            }
            _ => {}
        }
    }
    writes.extend(open.into_values().map(|input| Write {
        input,
        outcome: WriteOutcome::Unknown,
    }));
    Ok(writes)
}

/// Reads a watch run's `history.jsonl` and `watch.jsonl` from `run_dir` and checks them.
///
/// # Errors
/// When either file cannot be read or parsed.
pub fn check_run_dir(run_dir: &Path) -> anyhow::Result<WatchCheck> {
    let open = |name: &str| {
        let path = run_dir.join(name);
        File::open(&path)
            .map(BufReader::new)
            .with_context(|| format!("open {}", path.display()))
    };
    let writes = parse_writes(open("history.jsonl")?).context("read history.jsonl")?;
    let lines = parse_watch_log(open("watch.jsonl")?).context("read watch.jsonl")?;
    Ok(check(&writes, &lines))
}

/// Reads `watch.jsonl`.
///
/// # Errors
/// On I/O failure or a line that does not parse.
pub fn parse_watch_log(reader: impl BufRead) -> anyhow::Result<Vec<WatchLine>> {
    let mut parsed = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        parsed.push(
            serde_json::from_str(&line).with_context(|| format!("watch log line {}", index + 1))?,
        );
    }
    Ok(parsed)
}

/// An event's content, without its revision and key (the truth's index) and without `prev_kv`
/// (which depends on the watcher's options).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Body {
    kind: EventKind,
    value: String,
    create_revision: Revision,
    version: i64,
}

impl Body {
    fn of(event: &WatchEvent) -> Body {
        Body {
            kind: event.kind,
            value: event.value.clone(),
            create_revision: event.create_revision,
            version: event.version,
        }
    }
}

impl fmt::Display for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            EventKind::Put => write!(
                f,
                "put {:?} (create {}, version {})",
                self.value, self.create_revision, self.version
            ),
            EventKind::Delete => f.write_str("delete"),
        }
    }
}

/// A response with its fragments joined.
#[derive(Debug)]
struct Response {
    header_revision: Revision,
    progress: bool,
    compact_revision: Revision,
    events: Vec<WatchEvent>,
}

/// A segment as recorded.
#[derive(Debug)]
struct Segment {
    start: SegmentStart,
    responses: Vec<Response>,
}

impl Segment {
    fn place(&self) -> String {
        format!(
            "{} {} segment {} (n{})",
            if self.start.collector {
                "collector"
            } else {
                "watcher"
            },
            self.start.watcher,
            self.start.segment,
            self.start.member + 1
        )
    }

    fn wants(&self, key: &str, kind: EventKind) -> bool {
        key.starts_with(&self.start.prefix)
            && match kind {
                EventKind::Put => !self.start.no_put,
                EventKind::Delete => !self.start.no_delete,
            }
    }

    /// Why `event` does not match the segment's watch.
    fn unwanted(&self, event: &WatchEvent) -> String {
        format!(
            "{:?} event on {} does not match prefix {:?}{}{}",
            event.kind,
            event.key,
            self.start.prefix,
            if self.start.no_put { " NOPUT" } else { "" },
            if self.start.no_delete {
                " NODELETE"
            } else {
                ""
            }
        )
    }

    /// The highest revision the segment vouches for: its last event's, or a later progress
    /// notification's. Below its start when it vouches for nothing.
    fn covered_to(&self) -> Revision {
        let mut to = self.start.start_revision - 1;
        for response in &self.responses {
            if response.progress {
                to = to.max(response.header_revision);
            }
            for event in &response.events {
                if event.mod_revision >= self.start.start_revision {
                    to = to.max(event.mod_revision);
                }
            }
        }
        to
    }
}

/// Each watcher's segments in order, keyed by watcher.
fn segments(lines: &[WatchLine]) -> BTreeMap<u64, Vec<Segment>> {
    let mut by_segment: BTreeMap<(u64, u64), Segment> = BTreeMap::new();
    // Fragments waiting for the last part of their response.
    let mut partial: HashMap<(u64, u64), Vec<WatchEvent>> = HashMap::new();
    for line in lines {
        match line {
            WatchLine::Segment(start) => {
                by_segment.insert(
                    (start.watcher, start.segment),
                    Segment {
                        start: start.clone(),
                        responses: Vec::new(),
                    },
                );
            }
            WatchLine::Response(response) => {
                let id = (response.watcher, response.segment);
                if response.fragment {
                    partial
                        .entry(id)
                        .or_default()
                        .extend(response.events.iter().cloned());
                    continue;
                }
                let mut events = partial.remove(&id).unwrap_or_default();
                events.extend(response.events.iter().cloned());
                let joined = Response {
                    header_revision: response.header_revision,
                    progress: response.is_progress() && events.is_empty(),
                    compact_revision: response.compact_revision,
                    events,
                };
                if let Some(segment) = by_segment.get_mut(&id) {
                    segment.responses.push(joined);
                }
            }
            WatchLine::End(_) => {}
        }
    }
    let mut by_watcher: BTreeMap<u64, Vec<Segment>> = BTreeMap::new();
    for ((watcher, _), segment) in by_segment {
        by_watcher.entry(watcher).or_default().push(segment);
    }
    by_watcher
}

/// What the collectors saw: every event, by revision and key, and the revisions they covered.
#[derive(Debug, Default)]
struct Truth {
    events: BTreeMap<Revision, BTreeMap<String, Body>>,
    /// Disjoint, sorted, inclusive ranges.
    covered: Vec<(Revision, Revision)>,
    /// Each key's events in revision order.
    by_key: BTreeMap<String, Vec<(Revision, Body)>>,
}

impl Truth {
    fn build(watchers: &BTreeMap<u64, Vec<Segment>>, violations: &mut Vec<Violation>) -> Truth {
        let mut truth = Truth::default();
        let mut ranges = Vec::new();
        let mut source: HashMap<(Revision, String), String> = HashMap::new();
        // Revisions some compaction notice named. A watch may start at the compact revision
        // itself, but what it gets there is not history one can rely on: etcd drops a delete
        // made exactly at the compact revision, so such a watch misses it while watchers that
        // were past it already had it. A collector that starts there vouches only for what
        // comes after.
        let compacted_at: BTreeSet<Revision> = watchers
            .values()
            .flatten()
            .flat_map(|segment| &segment.responses)
            .map(|response| response.compact_revision)
            .filter(|&revision| revision != 0)
            .collect();
        for segment in watchers.values().flatten() {
            if !segment.start.collector || segment.start.no_put || segment.start.no_delete {
                continue;
            }
            let from = if compacted_at.contains(&segment.start.start_revision) {
                segment.start.start_revision + 1
            } else {
                segment.start.start_revision
            };
            let to = segment.covered_to();
            if to >= from {
                ranges.push((from, to));
            }
            for event in segment.responses.iter().flat_map(|r| &r.events) {
                if event.mod_revision < from || !event.key.starts_with(&segment.start.prefix) {
                    continue;
                }
                let body = Body::of(event);
                let at = truth.events.entry(event.mod_revision).or_default();
                match at.get(&event.key) {
                    Some(known) if *known != body => violations.push(Violation {
                        guarantee: Guarantee::SameHistory,
                        place: segment.place(),
                        revision: event.mod_revision,
                        text: format!(
                            "collectors disagree on {}: {} saw {known}, this one {body}",
                            event.key,
                            source[&(event.mod_revision, event.key.clone())]
                        ),
                    }),
                    Some(_) => {}
                    None => {
                        at.insert(event.key.clone(), body);
                        source.insert((event.mod_revision, event.key.clone()), segment.place());
                    }
                }
            }
        }
        ranges.sort_unstable();
        for (from, to) in ranges {
            match truth.covered.last_mut() {
                Some(last) if from <= last.1 + 1 => last.1 = last.1.max(to),
                _ => truth.covered.push((from, to)),
            }
        }
        for (&revision, keys) in &truth.events {
            for (key, body) in keys {
                truth
                    .by_key
                    .entry(key.clone())
                    .or_default()
                    .push((revision, body.clone()));
            }
        }
        truth
    }

    /// The covered range holding `revision`.
    fn range_of(&self, revision: Revision) -> Option<(Revision, Revision)> {
        let index = self.covered.partition_point(|&(from, _)| from <= revision);
        let &(from, to) = self.covered.get(index.checked_sub(1)?)?;
        (revision <= to).then_some((from, to))
    }

    fn covers(&self, revision: Revision) -> bool {
        self.range_of(revision).is_some()
    }

    /// The key's version just before `revision`, as far as the truth can tell: it cannot when
    /// its coverage starts after revision 1 and the key had no event since.
    fn before(&self, key: &str, revision: Revision) -> Prior {
        let Some((from, _)) = self.range_of(revision - 1).or(self.range_of(revision)) else {
            return Prior::Unknown;
        };
        let earlier = self
            .by_key
            .get(key)
            .and_then(|events| {
                let index = events.partition_point(|(at, _)| *at < revision);
                events[..index].last()
            })
            .filter(|(at, _)| *at >= from);
        match earlier {
            Some((at, body)) if body.kind == EventKind::Put => Prior::Version(*at, body.clone()),
            Some(_) => Prior::Absent,
            None if from <= 1 => Prior::Absent,
            None => Prior::Unknown,
        }
    }
}

/// A key's state just before some revision.
#[derive(Debug)]
enum Prior {
    /// The truth cannot tell.
    Unknown,
    /// It did not exist (never written, or deleted).
    Absent,
    /// This version, written at this revision.
    Version(Revision, Body),
}

/// Where a run of segments stands.
#[derive(Debug, Default)]
struct Run {
    seen: HashSet<(Revision, String)>,
    /// The highest event revision delivered so far, and the response (numbered along the
    /// watcher) that carried it.
    last: Option<(Revision, u64)>,
}

/// How an event fits the run so far.
enum Admission {
    /// Its (revision, key) was delivered before.
    Repeat,
    /// It is new but out of place: ordered or atomic.
    Out(Guarantee, String),
    /// It is new and in place.
    InOrder,
}

impl Run {
    /// Admits `event`, carried by response `response` (numbered along the watcher).
    fn admit(&mut self, event: &WatchEvent, response: u64) -> Admission {
        let revision = event.mod_revision;
        if !self.seen.insert((revision, event.key.clone())) {
            return Admission::Repeat;
        }
        let admission = match self.last {
            Some((last, _)) if revision < last => Admission::Out(
                Guarantee::Ordered,
                format!("event on {} after an event at revision {last}", event.key),
            ),
            Some((last, number)) if revision == last && number != response => Admission::Out(
                Guarantee::Atomic,
                format!(
                    "event on {} in a later response than another event of its revision",
                    event.key
                ),
            ),
            _ => Admission::InOrder,
        };
        if self.last.is_none_or(|(last, _)| revision > last) {
            self.last = Some((revision, response));
        }
        admission
    }
}

/// Judges the recorded watch responses against each other, the collectors' truth and the
/// writes.
#[must_use]
pub fn check(writes: &[Write], lines: &[WatchLine]) -> WatchCheck {
    let watchers = segments(lines);
    let mut violations = Vec::new();
    let truth = Truth::build(&watchers, &mut violations);
    let mut stats = WatchStats {
        truth_revisions: truth.events.len() as u64,
        truth_events: truth.events.values().map(|keys| keys.len() as u64).sum(),
        truth_covered: truth.covered.clone(),
        ..WatchStats::default()
    };
    let compact_floor = watchers
        .values()
        .flatten()
        .flat_map(|segment| &segment.responses)
        .map(|response| response.compact_revision)
        .max()
        .unwrap_or(0);
    // Events beyond the truth, by revision and key: the first watcher to report one sets it.
    let mut beyond: HashMap<(Revision, String), (String, Body)> = HashMap::new();
    for segments in watchers.values() {
        if segments.first().is_some_and(|s| s.start.collector) {
            stats.collectors += 1;
        } else {
            stats.watchers += 1;
        }
        let mut run = Run::default();
        let mut response_number = 0_u64;
        for segment in segments {
            stats.segments += 1;
            if segment.start.resume {
                stats.resumes += 1;
            } else {
                if segment.start.segment > 0 {
                    stats.rewinds += 1;
                }
                run = Run::default();
            }
            let context = SegmentContext {
                truth: &truth,
                compact_floor,
            };
            check_segment(
                &context,
                segment,
                &mut run,
                &mut response_number,
                &mut beyond,
                &mut stats,
                &mut violations,
            );
        }
    }
    check_is_create(&truth, &mut violations);
    check_writes(writes, &truth, &mut stats, &mut violations);
    WatchCheck { violations, stats }
}

struct SegmentContext<'a> {
    truth: &'a Truth,
    /// The highest compact revision any notice named.
    compact_floor: Revision,
}

/// Checks one segment's events one by one, then its coverage.
fn check_segment(
    context: &SegmentContext<'_>,
    segment: &Segment,
    run: &mut Run,
    response_number: &mut u64,
    beyond: &mut HashMap<(Revision, String), (String, Body)>,
    stats: &mut WatchStats,
    violations: &mut Vec<Violation>,
) {
    let start = segment.start.start_revision;
    let place = segment.place();
    let mut report = |guarantee, revision, text: String| {
        violations.push(Violation {
            guarantee,
            place: place.clone(),
            revision,
            text,
        });
    };
    let mut bookmark: Option<Revision> = None;
    let mut first: Option<Revision> = None;
    let mut delivered: HashSet<(Revision, &str)> = HashSet::new();
    for response in &segment.responses {
        *response_number += 1;
        stats.responses += 1;
        if response.compact_revision != 0 {
            stats.compactions += 1;
            continue;
        }
        if response.progress {
            stats.progress_notifications += 1;
            bookmark = bookmark.max(Some(response.header_revision));
            // A notification vouching for revisions from the start on counts as the
            // segment's first delivery; one below the start (a lagging member) says nothing.
            if response.header_revision >= start {
                first.get_or_insert(response.header_revision + 1);
            }
            continue;
        }
        for event in &response.events {
            stats.events += 1;
            let revision = event.mod_revision;
            if !segment.wants(&event.key, event.kind) {
                report(Guarantee::Filter, revision, segment.unwanted(event));
                continue;
            }
            if revision < start {
                report(
                    Guarantee::Resumable,
                    revision,
                    format!(
                        "event on {} is below the requested start {start}",
                        event.key
                    ),
                );
                continue;
            }
            // A repeat still counts as delivered here: its segment did get the event.
            delivered.insert((revision, event.key.as_str()));
            match run.admit(event, *response_number) {
                Admission::Repeat => {
                    report(
                        Guarantee::Unique,
                        revision,
                        format!("{} delivered again", event.key),
                    );
                    continue;
                }
                Admission::Out(guarantee, text) => report(guarantee, revision, text),
                Admission::InOrder => {}
            }
            if let Some(bookmark) = bookmark.filter(|&bookmark| revision <= bookmark) {
                report(
                    Guarantee::Bookmarkable,
                    revision,
                    format!(
                        "event on {} after a progress notification at revision {bookmark}",
                        event.key
                    ),
                );
            }
            first.get_or_insert(revision);
            check_content(context, segment, event, beyond, &mut report);
        }
    }
    check_coverage(context.truth, segment, first, &delivered, &mut report);
}

/// The event against the truth (or other watchers beyond it), and its `prev_kv`.
fn check_content(
    context: &SegmentContext<'_>,
    segment: &Segment,
    event: &WatchEvent,
    beyond: &mut HashMap<(Revision, String), (String, Body)>,
    report: &mut impl FnMut(Guarantee, Revision, String),
) {
    let revision = event.mod_revision;
    let truth = context.truth;
    let body = Body::of(event);
    if truth.covers(revision) {
        match truth
            .events
            .get(&revision)
            .and_then(|keys| keys.get(&event.key))
        {
            Some(known) if *known == body => {}
            Some(known) => report(
                Guarantee::SameHistory,
                revision,
                format!("{}: expected {known}, got {body}", event.key),
            ),
            None => report(
                Guarantee::SameHistory,
                revision,
                format!(
                    "{}: got {body}, but the collectors saw no event of that key there",
                    event.key
                ),
            ),
        }
    } else {
        let id = (revision, event.key.clone());
        match beyond.get(&id) {
            Some((who, known)) if *known != body => report(
                Guarantee::SameHistory,
                revision,
                format!("{}: {who} saw {known}, this one {body}", event.key),
            ),
            Some(_) => {}
            None => {
                beyond.insert(id, (segment.place(), body));
            }
        }
    }
    if !segment.start.prev_kv {
        if event.prev_kv.is_some() {
            report(
                Guarantee::PrevKv,
                revision,
                format!("{}: prev_kv sent though not asked for", event.key),
            );
        }
        return;
    }
    let got = event.prev_kv.as_ref();
    match (truth.before(&event.key, revision), got) {
        (Prior::Unknown, _) | (Prior::Absent, None) => {}
        (Prior::Absent, Some(got)) => report(
            Guarantee::PrevKv,
            revision,
            format!(
                "{}: the key did not exist before, but prev_kv is {:?} at {}",
                event.key, got.value, got.mod_revision
            ),
        ),
        (Prior::Version(at, _), None) if at < context.compact_floor => {}
        (Prior::Version(at, known), None) => report(
            Guarantee::PrevKv,
            revision,
            format!("{}: prev_kv missing, expected {known} at {at}", event.key),
        ),
        (Prior::Version(at, known), Some(got)) => {
            let same = got.value == known.value
                && got.mod_revision == at
                && got.create_revision == known.create_revision
                && got.version == known.version;
            if !same {
                report(
                    Guarantee::PrevKv,
                    revision,
                    format!(
                        "{}: expected {known} at {at}, got put {:?} (create {}, version {}) at {}",
                        event.key, got.value, got.create_revision, got.version, got.mod_revision
                    ),
                );
            }
        }
    }
}

/// Every matching event of the truth inside the segment's coverage must have been delivered:
/// one missing before the segment's first event (or progress notification) is a start that was
/// not honoured, one after it a gap.
fn check_coverage(
    truth: &Truth,
    segment: &Segment,
    first: Option<Revision>,
    delivered: &HashSet<(Revision, &str)>,
    report: &mut impl FnMut(Guarantee, Revision, String),
) {
    let start = segment.start.start_revision;
    let to = segment.covered_to();
    if to < start {
        return;
    }
    let mut skipped: Vec<(Revision, &str)> = Vec::new();
    let mut gaps: Vec<(Revision, &str)> = Vec::new();
    for (&revision, keys) in truth.events.range(start..=to) {
        for (key, body) in keys {
            if !segment.wants(key, body.kind) || delivered.contains(&(revision, key.as_str())) {
                continue;
            }
            if first.is_none_or(|first| revision < first) {
                skipped.push((revision, key));
            } else {
                gaps.push((revision, key));
            }
        }
    }
    if let Some(&(revision, key)) = skipped.first() {
        report(
            Guarantee::Resumable,
            revision,
            format!(
                "started at {start} but the first delivery was at {}; {} matching event(s) \
                 skipped, the first on {key}",
                first.map_or_else(|| "none".to_owned(), |first| first.to_string()),
                skipped.len()
            ),
        );
    }
    if let Some(&(revision, key)) = gaps.first() {
        report(
            Guarantee::Reliable,
            revision,
            format!(
                "{} matching event(s) missing between {start} and {to}, the first on {key}",
                gaps.len()
            ),
        );
    }
}

/// Keys changed at one revision: `Some(value)` for a put, `None` for a delete.
type Changes<'a> = BTreeMap<&'a str, Option<&'a str>>;

/// The changes an acknowledged write made at its revision: key → `Some(value)` for a put, `None`
/// for a delete; and whether its deletes may have found nothing (a Txn's). Empty when it made
/// no revision; `None` when the output does not answer the input.
fn expected_changes<'a>(
    input: &'a WriteInput,
    output: &WriteOutput,
) -> Option<(Revision, Changes<'a>, bool)> {
    Some(match (input, output) {
        (WriteInput::Put { key, value }, WriteOutput::Put { revision }) => (
            *revision,
            BTreeMap::from([(key.as_str(), Some(value.as_str()))]),
            false,
        ),
        (
            WriteInput::Delete { .. },
            WriteOutput::Delete {
                revision,
                deleted: 0,
            },
        ) => (*revision, BTreeMap::new(), false),
        (WriteInput::Delete { key }, WriteOutput::Delete { revision, .. }) => {
            (*revision, BTreeMap::from([(key.as_str(), None)]), false)
        }
        (WriteInput::Compact { .. }, WriteOutput::Compact { revision }) => {
            (*revision, BTreeMap::new(), false)
        }
        (WriteInput::Txn { ops }, WriteOutput::Txn { revision }) => {
            let changes = ops
                .iter()
                .map(|op| match op {
                    TxnOp::Put { key, value } => (key.as_str(), Some(value.as_str())),
                    TxnOp::Delete { key } => (key.as_str(), None),
                })
                .collect();
            (*revision, changes, true)
        }
        _ => return None,
    })
}

/// Replays the truth key by key: every event must follow from the key's previous state.
fn check_is_create(truth: &Truth, violations: &mut Vec<Violation>) {
    for (key, events) in &truth.by_key {
        for (revision, body) in events {
            let revision = *revision;
            let expected = match (truth.before(key, revision), body.kind) {
                // Unknown history, or a delete of a live key (its event carries no version).
                (Prior::Unknown, _) | (Prior::Version(..), EventKind::Delete) => continue,
                (Prior::Absent, EventKind::Put) => (revision, 1),
                (Prior::Version(_, previous), EventKind::Put) => {
                    (previous.create_revision, previous.version + 1)
                }
                (Prior::Absent, EventKind::Delete) => {
                    violations.push(Violation {
                        guarantee: Guarantee::IsCreate,
                        place: "truth".to_owned(),
                        revision,
                        text: format!("{key}: deleted, but it did not exist"),
                    });
                    continue;
                }
            };
            if (body.create_revision, body.version) != expected {
                violations.push(Violation {
                    guarantee: Guarantee::IsCreate,
                    place: "truth".to_owned(),
                    revision,
                    text: format!(
                        "{key}: expected create revision {} and version {}, got {body}",
                        expected.0, expected.1
                    ),
                });
            }
        }
    }
}

/// Reports one violation of the `writes` guarantee.
fn report_write(violations: &mut Vec<Violation>, revision: Revision, text: String) {
    violations.push(Violation {
        guarantee: Guarantee::Writes,
        place: "writes".to_owned(),
        revision,
        text,
    });
}

/// The acknowledged writes against the truth, and the truth's puts against the writes.
fn check_writes(
    writes: &[Write],
    truth: &Truth,
    stats: &mut WatchStats,
    violations: &mut Vec<Violation>,
) {
    for write in writes {
        let WriteOutcome::Ok(output) = &write.outcome else {
            continue;
        };
        let Some((revision, expected, deletes_optional)) = expected_changes(&write.input, output)
        else {
            let text = format!("{:?} answered with {output:?}", write.input);
            report_write(violations, 0, text);
            continue;
        };
        if expected.is_empty() {
            // A delete that found nothing, or a compaction, made no revision.
            continue;
        }
        if !truth.covers(revision) {
            stats.writes_unchecked += 1;
            continue;
        }
        stats.writes_checked += 1;
        let empty = BTreeMap::new();
        let actual = truth.events.get(&revision).unwrap_or(&empty);
        for (key, change) in &expected {
            let seen = actual.get(*key);
            let fine = match (change, seen) {
                (Some(value), Some(body)) => body.kind == EventKind::Put && body.value == *value,
                (None, Some(body)) => body.kind == EventKind::Delete,
                (None, None) => deletes_optional,
                (Some(_), None) => false,
            };
            if !fine {
                let text = format!(
                    "acknowledged {} of {key} is not in the history at its revision (there: {})",
                    change.map_or_else(|| "delete".to_owned(), |v| format!("put {v:?}")),
                    seen.map_or_else(|| "nothing".to_owned(), ToString::to_string)
                );
                report_write(violations, revision, text);
            }
        }
        for (key, body) in actual {
            if !expected.contains_key(key.as_str()) {
                let text = format!(
                    "the revision of an acknowledged {:?} also changed {key} ({body})",
                    write.input
                );
                report_write(violations, revision, text);
            }
        }
    }
    check_put_values(writes, truth, violations);
}

/// Every put in the truth names, by its unique value, a write of that key that did not fail.
fn check_put_values(writes: &[Write], truth: &Truth, violations: &mut Vec<Violation>) {
    // Every value written, with its key and whether its write failed.
    let mut values: HashMap<&str, (&str, bool)> = HashMap::new();
    for write in writes {
        let failed = write.outcome == WriteOutcome::Fail;
        match &write.input {
            WriteInput::Put { key, value } => {
                values.insert(value, (key, failed));
            }
            WriteInput::Delete { .. } | WriteInput::Compact { .. } => {}
            WriteInput::Txn { ops } => {
                for op in ops {
                    if let TxnOp::Put { key, value } = op {
                        values.insert(value, (key, failed));
                    }
                }
            }
        }
    }
    for (&revision, keys) in &truth.events {
        for (key, body) in keys {
            if body.kind != EventKind::Put {
                continue;
            }
            let text = match values.get(body.value.as_str()) {
                None => format!("{key} = {:?}: no client wrote this value", body.value),
                Some((written, _)) if *written != key.as_str() => {
                    format!(
                        "{key} = {:?}: this value was written to {written}",
                        body.value
                    )
                }
                Some((_, true)) => format!("{key} = {:?}: its write failed", body.value),
                Some(_) => continue,
            };
            report_write(violations, revision, text);
        }
    }
}

#[cfg(test)]
mod tests;
