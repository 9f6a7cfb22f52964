//! Elle-lite: list-append histories checked for strict serializability (jepsen.md §4).
//!
//! Owns the list-append vocabulary ([`Mop`], [`TxnInput`], [`TxnOutput`]), the reader of a
//! `history.jsonl` written in it ([`read_history`]), and the verdict ([`check`]).
//! Must not: run clusters or record histories (the `append` workload does), or trust anything
//! the store says about order: the only evidence is what the clients read and when.
//!
//! # Why lists
//! Every transaction is a few micro-operations on keys whose values are lists: `append k v`
//! adds `v` (unique per key) to the end of `k`'s list, `read k` returns the whole list. Lists
//! only grow, so one read reveals the order of every append it contains, and all reads of a key
//! must be prefixes of one another. The longest read of a key is taken as that key's version
//! order; each value then names the transaction that wrote it, and each read names the
//! transaction it read from and the one that came next.
//!
//! # What is checked
//! Anomalies without cycles, each counted under its class:
//! - `incompatible-order`: a read of a key is not a prefix of the key's longest read;
//! - `duplicate`: a value appears twice in one read;
//! - `garbage`: a read contains a value no transaction ever tried to append;
//! - `G1a` (aborted read): a read contains a value whose transaction failed;
//! - `G1b` (intermediate read): a read ends in a value that was not its writer's last append to
//!   that key (the writer appended to it again);
//! - `internal`: a transaction's read contradicts its own earlier operations on that key.
//!
//! Then a dependency graph over the committed transactions (every `ok` one, and every unknown
//! one with an append some read saw), with edges
//! - `ww`: T1's append to a key directly precedes T2's in the key's order;
//! - `wr`: T2's first read of a key (before any append of its own to it) ends in T1's append;
//! - `rw`: T1's first read of a key ends just before T2's append in the key's order, or misses
//!   an append of T2 that committed but that no read ever saw (a lost append: T1 must come
//!   before T2);
//! - `rt`: T1 completed before T2 began (a transitive reduction, see [`graph::realtime_edges`]).
//!
//! Any cycle is a violation. Each strongly connected component is searched for its weakest
//! cycle, with progressively wider edge sets: `G0` (ww only), `G1c` (ww and wr), `G-single`
//! (exactly one rw), `G2` (several rw); and, when only a cycle through a real-time edge exists,
//! the same classes with `-realtime`: serializable, but not strictly.
//!
//! # Unknown transactions
//! A transaction whose outcome is unknown may or may not have committed. Its reads are unknown
//! and say nothing. Its appends count as committed once any read saw one of them; otherwise it is
//! left out of the graph. A failed transaction certainly did not commit: reading its append is
//! `G1a`.
//!
//! # Cost
//! Linear in the total length of the longest reads plus the number of micro-operations, plus the
//! real-time sweep (concurrency edges per transaction); cycle searches run only inside
//! components, which a valid history does not have.
//!
//! Worked example: T1 appends 1 to x (ok); T2 reads x = [1] and appends 5 to y (ok); T3 reads
//! y = [] and reads x = [] (ok). x's order is [1], y's is [5]. Edges: T1 -wr-> T2 (T2 read
//! T1's 1), T3 -rw-> T1 (T3's read of x missed the 1 that comes next), T3 -rw-> T2 (T3's read
//! of y missed T2's 5). No cycle: T3, T1, T2 is a serial order. Had T3 instead read y = [5] and
//! x = [], the edge T2 -wr-> T3 would close T2 -> T3 -> T1 -> T2 with one rw edge: `G-single`.

mod graph;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::io::BufRead;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::graph::{ALL_KINDS, Graph, Kinds, RT, RW, Step, WR, WW};
use crate::history::jsonl::{FORMAT_NAME, FORMAT_VERSION, Header, ModelName};
use crate::history::{ParseError, RETURN_NEVER, Time};

/// Anomalies explained per class; the rest are only counted.
pub const EXAMPLES_PER_CLASS_MAX: u64 = 3;
/// Read-write edges tried per component when looking for a `G-single` cycle beyond those that
/// certainly close one; bounds the search on a huge component, where any cycle found later is
/// still reported (as `G2`).
const SINGLE_RW_ATTEMPTS_MAX: usize = 64;
/// Elements of a list shown in an explanation; the rest are elided.
const LIST_TAIL_SHOWN_MAX: usize = 8;
/// Elements shown before the interesting position of a list (where two reads part, say).
const LIST_CONTEXT_SHOWN: usize = 2;
/// Micro-operations of a transaction shown in an explanation; a final read of many keys shows
/// only the key in question.
const DESCRIBED_OPS_MAX: usize = 6;

/// One micro-operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Mop {
    /// Append `value` to the list at `key`.
    Append {
        /// The key.
        key: String,
        /// The value, unique per key.
        value: u64,
    },
    /// Read the list at `key`; `value` is what was read (an absent key reads as empty), or
    /// `None` when unknown (in a request, or in a transaction that did not complete).
    Read {
        /// The key.
        key: String,
        /// The list read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Vec<u64>>,
    },
}

impl Mop {
    /// The key it touches.
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            Mop::Append { key, .. } | Mop::Read { key, .. } => key,
        }
    }
}

/// The one function of the vocabulary: a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnFunction {
    /// `"f":"txn"`.
    Txn,
}

/// A transaction's request, as `history.jsonl` records it on `invoke`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnInput {
    /// Always `txn`.
    pub f: TxnFunction,
    /// Its micro-operations, in order; reads without values.
    pub ops: Vec<Mop>,
}

/// A transaction's result, as `history.jsonl` records it on `ok`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOutput {
    /// Always `txn`.
    pub f: TxnFunction,
    /// The micro-operations of the request, each read with the list it saw.
    pub ops: Vec<Mop>,
    /// Header revision of the read that saw the lists (for people; the checker ignores it).
    #[serde(default)]
    pub read_revision: i64,
    /// Header revision of the commit, or of the read for a read-only transaction (likewise).
    #[serde(default)]
    pub revision: i64,
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnStatus {
    /// Committed, with the reads recorded.
    Ok,
    /// Certainly did not commit.
    Fail,
    /// Unknown.
    Info,
}

/// One transaction of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    /// The logical client.
    pub process: u64,
    /// When it was sent.
    pub call: Time,
    /// When its response arrived; [`RETURN_NEVER`] when its outcome is unknown.
    pub ret: Time,
    /// How it ended.
    pub status: TxnStatus,
    /// Its micro-operations; reads carry values only when `status` is [`TxnStatus::Ok`].
    pub ops: Vec<Mop>,
}

/// The classes of anomaly, in the order reports list them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyClass {
    /// A cycle of ww edges.
    G0,
    /// A read of a failed transaction's append.
    G1a,
    /// A read ending in a value its writer later followed with another append to that key.
    G1b,
    /// A cycle of ww and wr edges.
    G1c,
    /// A cycle with exactly one rw edge.
    GSingle,
    /// A cycle with several rw edges.
    G2,
    /// `G0`, through a real-time edge.
    G0Realtime,
    /// `G1c`, through a real-time edge.
    G1cRealtime,
    /// `G-single`, through a real-time edge.
    GSingleRealtime,
    /// `G2`, through a real-time edge.
    G2Realtime,
    /// Two reads of a key, neither a prefix of the other.
    IncompatibleOrder,
    /// A read that contradicts the transaction's own earlier operations.
    Internal,
    /// A value twice in one read.
    Duplicate,
    /// A value never appended.
    Garbage,
}

impl AnomalyClass {
    /// Its name in reports, as Elle spells it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            AnomalyClass::G0 => "G0",
            AnomalyClass::G1a => "G1a",
            AnomalyClass::G1b => "G1b",
            AnomalyClass::G1c => "G1c",
            AnomalyClass::GSingle => "G-single",
            AnomalyClass::G2 => "G2",
            AnomalyClass::G0Realtime => "G0-realtime",
            AnomalyClass::G1cRealtime => "G1c-realtime",
            AnomalyClass::GSingleRealtime => "G-single-realtime",
            AnomalyClass::G2Realtime => "G2-realtime",
            AnomalyClass::IncompatibleOrder => "incompatible-order",
            AnomalyClass::Internal => "internal",
            AnomalyClass::Duplicate => "duplicate",
            AnomalyClass::Garbage => "garbage",
        }
    }

    /// The class of a cycle whose steps have these kinds.
    fn of_cycle(steps: &[Step]) -> AnomalyClass {
        let rw = steps.iter().filter(|step| step.kind == RW).count();
        let wr = steps.iter().any(|step| step.kind == WR);
        let realtime = steps.iter().any(|step| step.kind == RT);
        match (rw, wr, realtime) {
            (0, false, false) => AnomalyClass::G0,
            (0, true, false) => AnomalyClass::G1c,
            (1, _, false) => AnomalyClass::GSingle,
            (_, _, false) => AnomalyClass::G2,
            (0, false, true) => AnomalyClass::G0Realtime,
            (0, true, true) => AnomalyClass::G1cRealtime,
            (1, _, true) => AnomalyClass::GSingleRealtime,
            (_, _, true) => AnomalyClass::G2Realtime,
        }
    }
}

impl fmt::Display for AnomalyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One explained anomaly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    /// Its class.
    pub class: AnomalyClass,
    /// What happened, naming transactions (`T<index>`), keys and values.
    pub explanation: String,
}

/// The checker's findings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElleReport {
    /// Anomalies found, by class.
    pub counts: BTreeMap<AnomalyClass, u64>,
    /// The first few of each class, explained, in the order found.
    pub examples: Vec<Anomaly>,
    /// Transactions in the history.
    pub txns: usize,
    /// Transactions in the dependency graph (committed).
    pub committed: usize,
    /// Keys.
    pub keys: usize,
    /// Graph edges in all, and by kind: ww, wr, rw, rt.
    pub edges: (usize, [usize; 4]),
}

impl ElleReport {
    /// Whether no anomaly was found.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.counts.is_empty()
    }

    /// Anomaly counts by class name, for `results.json`.
    #[must_use]
    pub fn counts_by_name(&self) -> BTreeMap<&'static str, u64> {
        self.counts
            .iter()
            .map(|(class, count)| (class.name(), *count))
            .collect()
    }

    /// The first `max` explanations, one paragraph each.
    #[must_use]
    pub fn explanation(&self, max: usize) -> String {
        let mut text = String::new();
        for anomaly in self.examples.iter().take(max) {
            let _ = writeln!(text, "{}: {}", anomaly.class, anomaly.explanation);
        }
        text
    }
}

/// Why a history cannot be judged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedHistory {
    /// Two transactions (or one, twice) appended the same value to a key, so a read of it
    /// cannot name its writer.
    #[error("{value} was appended to {key} by both T{first} and T{second}; values must be unique")]
    AppendedTwice {
        /// The key.
        key: String,
        /// The value.
        value: u64,
        /// The first appender.
        first: usize,
        /// The second appender.
        second: usize,
    },
    /// An `ok` transaction has a read without a value.
    #[error("T{txn} completed, but its read of {key} has no value")]
    ReadWithoutValue {
        /// The transaction.
        txn: usize,
        /// The key.
        key: String,
    },
}

/// Reads a list-append `history.jsonl` (see [`crate::history::jsonl`]): the header must name the
/// `append` model. Unlike the linearizability readers it keeps failed transactions, whose appends
/// a read must never see. Transactions come out sorted by call time; their index is their name
/// (`T<index>`) in explanations.
///
/// # Errors
/// On I/O failure, a header for another model, a malformed line, or events that break the
/// pairing rules (one open transaction per process, completions after calls).
pub fn read_history(reader: impl BufRead) -> Result<Vec<Txn>, ParseError> {
    let mut lines = reader.lines();
    let header_line = lines.next().transpose()?.unwrap_or_default();
    let header: Header =
        serde_json::from_str(&header_line).map_err(|error| ParseError::Syntax {
            line: 1,
            message: format!("bad header: {error}"),
        })?;
    if header.format != FORMAT_NAME
        || header.version != FORMAT_VERSION
        || header.model != ModelName::Append
    {
        return Err(ParseError::Syntax {
            line: 1,
            message: format!(
                "expected a {FORMAT_NAME:?} version {FORMAT_VERSION} append history, got {:?} \
                 version {} for {:?}",
                header.format, header.version, header.model
            ),
        });
    }
    let mut pairing = TxnPairing::default();
    for (index, line) in lines.enumerate() {
        let line = line?;
        if !line.trim().is_empty() {
            pairing.line(index + 2, &line)?;
        }
    }
    Ok(pairing.finish())
}

/// One line of a history file, whatever its type.
#[derive(Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    process: Option<u64>,
    time: Option<Time>,
    input: Option<TxnInput>,
    output: Option<TxnOutput>,
}

/// Pairs invokes with completions into transactions, keeping failed ones.
#[derive(Default)]
struct TxnPairing {
    /// process -> (line, call, requested micro-operations)
    open: HashMap<u64, (usize, Time, Vec<Mop>)>,
    txns: Vec<Txn>,
}

impl TxnPairing {
    fn line(&mut self, line_number: usize, line: &str) -> Result<(), ParseError> {
        let syntax = |message: String| ParseError::Syntax {
            line: line_number,
            message,
        };
        let event: Line =
            serde_json::from_str(line).map_err(|error| syntax(format!("bad event: {error}")))?;
        let status = match event.kind.as_str() {
            "invoke" => None,
            "ok" => Some(TxnStatus::Ok),
            "fail" => Some(TxnStatus::Fail),
            "info" => Some(TxnStatus::Info),
            // Nemesis lines and anything else readers of version 1 skip.
            _ => return Ok(()),
        };
        let process = event
            .process
            .ok_or_else(|| syntax("missing \"process\"".to_owned()))?;
        let time = event
            .time
            .ok_or_else(|| syntax("missing \"time\"".to_owned()))?;
        let Some(status) = status else {
            let input = event
                .input
                .ok_or_else(|| syntax("missing \"input\"".to_owned()))?;
            if let Some(&(open_line, _, _)) = self.open.get(&process) {
                return Err(ParseError::AlreadyOpen {
                    line: line_number,
                    process,
                    open_line,
                });
            }
            if time == RETURN_NEVER {
                return Err(ParseError::BadTime {
                    line: line_number,
                    message: format!("time {time} is reserved"),
                });
            }
            self.open.insert(process, (line_number, time, input.ops));
            return Ok(());
        };
        let Some((open_line, call, requested)) = self.open.remove(&process) else {
            return Err(ParseError::NotOpen {
                line: line_number,
                process,
            });
        };
        if time < call || time == RETURN_NEVER {
            return Err(ParseError::BadTime {
                line: line_number,
                message: format!(
                    "completion at {time} but the call from line {open_line} is at {call}"
                ),
            });
        }
        let (ret, ops) = match status {
            TxnStatus::Ok => {
                let output = event
                    .output
                    .ok_or_else(|| syntax("missing \"output\"".to_owned()))?;
                if !same_shape(&requested, &output.ops) {
                    return Err(syntax(format!(
                        "the result's micro-operations do not match the request from line \
                         {open_line}"
                    )));
                }
                (time, output.ops)
            }
            TxnStatus::Fail => (time, requested),
            // Unknown: it may take effect at any time after its call.
            TxnStatus::Info => (RETURN_NEVER, requested),
        };
        self.txns.push(Txn {
            process,
            call,
            ret,
            status,
            ops,
        });
        Ok(())
    }

    /// The transactions, sorted by call; those never completed are unknown.
    fn finish(mut self) -> Vec<Txn> {
        for (process, (_, call, ops)) in self.open {
            self.txns.push(Txn {
                process,
                call,
                ret: RETURN_NEVER,
                status: TxnStatus::Info,
                ops,
            });
        }
        // Stable, with never-completed ones (from a hash map) ordered by process for
        // repeatability.
        self.txns.sort_by_key(|txn| (txn.call, txn.process));
        self.txns
    }
}

/// Whether a result's micro-operations are the request's, with read values filled in.
fn same_shape(requested: &[Mop], returned: &[Mop]) -> bool {
    requested.len() == returned.len()
        && requested
            .iter()
            .zip(returned)
            .all(|(asked, got)| match (asked, got) {
                (Mop::Append { .. }, Mop::Append { .. }) => asked == got,
                (Mop::Read { key: asked, .. }, Mop::Read { key: got, .. }) => asked == got,
                _ => false,
            })
}

/// Checks a list-append history for strict serializability; see the module docs.
///
/// # Errors
/// When the history cannot be judged: a value appended twice to a key, or a completed read
/// without a value.
pub fn check(txns: &[Txn]) -> Result<ElleReport, MalformedHistory> {
    let mut analysis = Analysis::new(txns)?;
    analysis.check_internal();
    analysis.infer_orders();
    analysis.check_reads();
    analysis.find_cycles();
    Ok(analysis.report)
}

/// A micro-operation with its key interned.
#[derive(Clone, Copy, Debug)]
enum Op<'a> {
    Append { key: usize, value: u64 },
    Read { key: usize, value: &'a [u64] },
    UnknownRead,
}

/// The transaction that appended a value, and whether it was its last append to that key.
#[derive(Clone, Copy, Debug)]
struct Writer {
    txn: usize,
    last: bool,
}

/// A read of one key by one `ok` transaction.
#[derive(Clone, Copy, Debug)]
struct Read<'a> {
    txn: usize,
    key: usize,
    list: &'a [u64],
    /// The transaction's first operation on the key: what it saw of others.
    external: bool,
}

/// One key's version order.
#[derive(Debug, Default)]
struct Order<'a> {
    /// The longest read of the key.
    list: &'a [u64],
    /// The transaction that read it.
    reader: Option<usize>,
    /// For each position `i` (and `list.len()`), the first position `>= i` whose value has a
    /// committed writer, or `list.len()`: edges skip values of failed or unknown writers.
    next_committed: Vec<usize>,
    /// Committed (`ok`) appends to the key that no read saw, as (txn, value).
    unseen: Vec<(usize, u64)>,
}

struct Analysis<'a> {
    txns: &'a [Txn],
    key_names: Vec<&'a str>,
    ops: Vec<Vec<Op<'a>>>,
    writers: HashMap<(usize, u64), Writer>,
    reads: Vec<Read<'a>>,
    orders: Vec<Order<'a>>,
    /// (key, value) -> position in the key's order.
    positions: HashMap<(usize, u64), usize>,
    /// Reads (indexes into `reads`) that are not a prefix of their key's order.
    incompatible: HashSet<usize>,
    committed: Vec<bool>,
    report: ElleReport,
}

impl<'a> Analysis<'a> {
    fn new(txns: &'a [Txn]) -> Result<Analysis<'a>, MalformedHistory> {
        let mut key_index: HashMap<&'a str, usize> = HashMap::new();
        let mut key_names: Vec<&'a str> = Vec::new();
        let mut writers: HashMap<(usize, u64), Writer> = HashMap::new();
        let mut ops = Vec::with_capacity(txns.len());
        for (index, txn) in txns.iter().enumerate() {
            let mut interned = Vec::with_capacity(txn.ops.len());
            for mop in &txn.ops {
                let name = mop.key();
                let key = *key_index.entry(name).or_insert_with(|| {
                    key_names.push(name);
                    key_names.len() - 1
                });
                interned.push(match mop {
                    Mop::Append { value, .. } => {
                        let writer = Writer {
                            txn: index,
                            last: true,
                        };
                        if let Some(earlier) = writers.insert((key, *value), writer) {
                            return Err(MalformedHistory::AppendedTwice {
                                key: name.to_owned(),
                                value: *value,
                                first: earlier.txn,
                                second: index,
                            });
                        }
                        Op::Append { key, value: *value }
                    }
                    Mop::Read {
                        value: Some(list), ..
                    } if txn.status == TxnStatus::Ok => Op::Read { key, value: list },
                    Mop::Read { .. } if txn.status == TxnStatus::Ok => {
                        return Err(MalformedHistory::ReadWithoutValue {
                            txn: index,
                            key: name.to_owned(),
                        });
                    }
                    Mop::Read { .. } => Op::UnknownRead,
                });
            }
            // Every append but the last to each key is intermediate.
            let mut seen_later: Vec<usize> = Vec::new();
            for op in interned.iter().rev() {
                if let Op::Append { key, value } = *op {
                    if seen_later.contains(&key) {
                        writers.get_mut(&(key, value)).expect("inserted above").last = false;
                    }
                    seen_later.push(key);
                }
            }
            ops.push(interned);
        }
        let keys = key_names.len();
        Ok(Analysis {
            txns,
            key_names,
            ops,
            writers,
            reads: Vec::new(),
            orders: (0..keys).map(|_| Order::default()).collect(),
            positions: HashMap::new(),
            incompatible: HashSet::new(),
            committed: vec![false; txns.len()],
            report: ElleReport {
                txns: txns.len(),
                keys,
                ..ElleReport::default()
            },
        })
    }

    /// Counts an anomaly, and explains it if its class has few examples so far.
    fn found(&mut self, class: AnomalyClass, explain: impl FnOnce(&Self) -> String) {
        let count = {
            let count = self.report.counts.entry(class).or_default();
            *count += 1;
            *count
        };
        if count <= EXAMPLES_PER_CLASS_MAX {
            let explanation = explain(self);
            self.report.examples.push(Anomaly { class, explanation });
        }
    }

    /// Replays each `ok` transaction's operations on what it knows of each key, and collects its
    /// reads. Before a transaction reads a key it knows only that its own appends end the list;
    /// after, it knows the whole list.
    fn check_internal(&mut self) {
        enum Known {
            Suffix(Vec<u64>),
            List(Vec<u64>),
        }
        for txn in 0..self.txns.len() {
            if self.txns[txn].status != TxnStatus::Ok {
                continue;
            }
            let mut known: Vec<(usize, Known)> = Vec::new();
            for op in self.ops[txn].clone() {
                match op {
                    Op::Append { key, value } => match known.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, Known::Suffix(list) | Known::List(list))) => list.push(value),
                        None => known.push((key, Known::Suffix(vec![value]))),
                    },
                    Op::Read { key, value } => {
                        let slot = known.iter().position(|(k, _)| *k == key);
                        let contradiction = match slot.map(|at| &known[at].1) {
                            Some(Known::List(expected)) if expected.as_slice() != value => {
                                Some(format!("its earlier operations imply {}", list(expected)))
                            }
                            Some(Known::Suffix(own)) if !value.ends_with(own) => Some(format!(
                                "it had appended {} to it itself, which must end the list",
                                list(own)
                            )),
                            _ => None,
                        };
                        if let Some(why) = contradiction {
                            self.found(AnomalyClass::Internal, |this| {
                                format!(
                                    "T{txn} read {} = {}, but {why}.\n{}",
                                    this.key_names[key],
                                    list(value),
                                    this.describe(txn, Some(key))
                                )
                            });
                        }
                        self.reads.push(Read {
                            txn,
                            key,
                            list: value,
                            external: slot.is_none(),
                        });
                        match slot {
                            Some(at) => known[at].1 = Known::List(value.to_vec()),
                            None => known.push((key, Known::List(value.to_vec()))),
                        }
                    }
                    Op::UnknownRead => {}
                }
            }
        }
    }

    /// Takes each key's longest read as its order, notes which reads disagree with it, decides
    /// which transactions committed, and finds committed appends no read saw.
    fn infer_orders(&mut self) {
        for read in &self.reads {
            let order = &mut self.orders[read.key];
            if order.reader.is_none() || read.list.len() > order.list.len() {
                order.list = read.list;
                order.reader = Some(read.txn);
            }
        }
        for (txn, committed) in self.committed.iter_mut().enumerate() {
            *committed = self.txns[txn].status == TxnStatus::Ok;
        }
        for (key, order) in self.orders.iter().enumerate() {
            for (position, &value) in order.list.iter().enumerate() {
                // A duplicate keeps its first position; `check_reads` reports it.
                self.positions.entry((key, value)).or_insert(position);
                if let Some(writer) = self.writers.get(&(key, value))
                    && self.txns[writer.txn].status == TxnStatus::Info
                {
                    // Someone saw it: the unknown transaction committed.
                    self.committed[writer.txn] = true;
                }
            }
        }
        for (key, order) in self.orders.iter_mut().enumerate() {
            let mut next = vec![order.list.len(); order.list.len() + 1];
            for position in (0..order.list.len()).rev() {
                let committed = self
                    .writers
                    .get(&(key, order.list[position]))
                    .is_some_and(|writer| self.committed[writer.txn]);
                next[position] = if committed {
                    position
                } else {
                    next[position + 1]
                };
            }
            order.next_committed = next;
        }
        for (txn, ops) in self.ops.iter().enumerate() {
            if self.txns[txn].status != TxnStatus::Ok {
                continue;
            }
            for op in ops {
                if let Op::Append { key, value } = *op
                    && !self.positions.contains_key(&(key, value))
                {
                    self.orders[key].unseen.push((txn, value));
                }
            }
        }
        for (index, read) in self.reads.iter().enumerate() {
            if !self.orders[read.key].list.starts_with(read.list) {
                self.incompatible.insert(index);
            }
        }
    }

    /// The anomalies a single read shows: incompatible orders, duplicates, garbage, aborted and
    /// intermediate reads.
    fn check_reads(&mut self) {
        let incompatible = self.report_incompatible();
        self.check_values(&incompatible);
        self.check_intermediate();
    }

    /// Reports every transaction's read of a key that is not a prefix of the key's order;
    /// returns every such read, sorted.
    fn report_incompatible(&mut self) -> Vec<usize> {
        let mut incompatible: Vec<usize> = self.incompatible.iter().copied().collect();
        incompatible.sort_unstable();
        // A transaction that read a key several times is one anomaly, not one per read.
        let mut reported: HashSet<(usize, usize)> = HashSet::new();
        for &index in &incompatible {
            let read = self.reads[index];
            if !reported.insert((read.txn, read.key)) {
                continue;
            }
            self.found(AnomalyClass::IncompatibleOrder, |this| {
                let order = &this.orders[read.key];
                let common = order
                    .list
                    .iter()
                    .zip(read.list)
                    .take_while(|(a, b)| a == b)
                    .count();
                format!(
                    "T{} read {} = {}, and T{} read it as {}; they agree on {common} elements, \
                     then differ, so neither is a prefix of the other.\n{}\n{}",
                    read.txn,
                    this.key_names[read.key],
                    list_from(read.list, common),
                    order.reader.expect("a key with reads has a longest one"),
                    list_from(order.list, common),
                    this.describe(read.txn, Some(read.key)),
                    this.describe(order.reader.expect("as above"), Some(read.key)),
                )
            });
        }
        incompatible
    }

    /// Duplicates, garbage and aborted values, looked for only in each key's order and in the
    /// `incompatible` reads: every other read is a prefix of its key's order.
    fn check_values(&mut self, incompatible: &[usize]) {
        let mut scanned: Vec<(usize, usize, &'a [u64])> = self
            .orders
            .iter()
            .enumerate()
            .filter_map(|(key, order)| order.reader.map(|reader| (reader, key, order.list)))
            .collect();
        scanned.extend(incompatible.iter().map(|&index| {
            let read = self.reads[index];
            (read.txn, read.key, read.list)
        }));
        let mut reported: HashSet<(AnomalyClass, usize, u64)> = HashSet::new();
        for (reader, key, read) in scanned {
            let mut in_read: HashSet<u64> = HashSet::with_capacity(read.len());
            for &value in read {
                let class = if in_read.insert(value) {
                    match self.writers.get(&(key, value)) {
                        None => AnomalyClass::Garbage,
                        Some(writer) if self.txns[writer.txn].status == TxnStatus::Fail => {
                            AnomalyClass::G1a
                        }
                        Some(_) => continue,
                    }
                } else {
                    AnomalyClass::Duplicate
                };
                if !reported.insert((class, key, value)) {
                    continue;
                }
                self.found(class, |this| {
                    let name = this.key_names[key];
                    let shown = list_around(read, value);
                    let what = match class {
                        AnomalyClass::Duplicate => format!("in which {value} appears twice"),
                        AnomalyClass::Garbage => {
                            format!("containing {value}, which no transaction appended")
                        }
                        _ => format!(
                            "containing {value}, but T{}, which appended it, failed (definitely \
                             did not commit).\n{}",
                            this.writers[&(key, value)].txn,
                            this.describe(this.writers[&(key, value)].txn, Some(key))
                        ),
                    };
                    format!(
                        "T{reader} read {name} = {shown}, {what}\n{}",
                        this.describe(reader, Some(key))
                    )
                });
            }
        }
    }

    /// Reads that end in an intermediate append of another transaction.
    fn check_intermediate(&mut self) {
        for index in 0..self.reads.len() {
            let read = self.reads[index];
            let Some(&last) = read.list.last() else {
                continue;
            };
            if !read.external {
                continue;
            }
            let Some(&writer) = self.writers.get(&(read.key, last)) else {
                continue;
            };
            // A failed writer's value is G1a already.
            if writer.last
                || writer.txn == read.txn
                || self.txns[writer.txn].status == TxnStatus::Fail
            {
                continue;
            }
            self.found(AnomalyClass::G1b, |this| {
                let later = this.ops[writer.txn]
                    .iter()
                    .filter_map(|op| match *op {
                        Op::Append { key, value } if key == read.key => Some(value),
                        _ => None,
                    })
                    .collect::<Vec<_>>();
                format!(
                    "T{} read {} = {}, ending in {last}, an intermediate append of T{}, which \
                     appended {} to that key in one transaction.\n{}\n{}",
                    read.txn,
                    this.key_names[read.key],
                    list(read.list),
                    writer.txn,
                    list(&later),
                    this.describe(read.txn, Some(read.key)),
                    this.describe(writer.txn, Some(read.key))
                )
            });
        }
    }

    /// Builds the dependency graph and reports a cycle per strongly connected component.
    fn find_cycles(&mut self) {
        let graph = Graph::new(self.txns.len(), self.edges());
        self.report.committed = self.committed.iter().filter(|&&c| c).count();
        self.report.edges = graph.edge_counts();
        // Weakest first; the real-time stages run only when no cycle avoids real time.
        let stages: [(Kinds, bool); 8] = [
            (WW, false),
            (WW | WR, false),
            (WW | WR, true),
            (WW | WR | RW, false),
            (WW | RT, false),
            (WW | WR | RT, false),
            (WW | WR | RT, true),
            (ALL_KINDS, false),
        ];
        for members in graph.cyclic_components() {
            let cycle = stages.iter().find_map(|&(kinds, single_rw)| {
                if single_rw {
                    graph.find_single_rw_cycle(&members, kinds, SINGLE_RW_ATTEMPTS_MAX)
                } else {
                    graph.find_cycle(&members, kinds)
                }
            });
            let cycle = cycle.expect("a strongly connected component has a cycle over all kinds");
            let class = AnomalyClass::of_cycle(&cycle);
            self.found(class, |this| this.explain_cycle(&cycle, members.len()));
        }
    }

    /// Every ww, wr, rw and rt edge among committed transactions.
    fn edges(&self) -> Vec<(usize, usize, Kinds)> {
        let mut edges = Vec::new();
        for (key, order) in self.orders.iter().enumerate() {
            let mut previous: Option<usize> = None;
            for &value in order.list {
                let Some(writer) = self.committed_writer(key, value) else {
                    continue;
                };
                if let Some(previous) = previous {
                    edges.push((previous, writer, WW));
                }
                previous = Some(writer);
            }
        }
        for (index, read) in self.reads.iter().enumerate() {
            if !read.external || self.incompatible.contains(&index) {
                continue;
            }
            let read_from = read
                .list
                .last()
                .and_then(|&last| self.committed_writer(read.key, last));
            if let Some(writer) = read_from {
                edges.push((writer, read.txn, WR));
            }
            let order = &self.orders[read.key];
            // When the next value has the writer the read ended in, the read stopped inside
            // that transaction's appends: G1b, reported as such rather than as the two-edge
            // cycle it would close.
            if let Some(&next) = order
                .next_committed
                .get(read.list.len())
                .and_then(|&at| order.list.get(at))
                && let Some(writer) = self.committed_writer(read.key, next)
                && Some(writer) != read_from
            {
                edges.push((read.txn, writer, RW));
            }
            for &(writer, _) in &order.unseen {
                edges.push((read.txn, writer, RW));
            }
        }
        let timed: Vec<(usize, Time, Time)> = (0..self.txns.len())
            .filter(|&txn| self.committed[txn])
            .map(|txn| (txn, self.txns[txn].call, self.txns[txn].ret))
            .collect();
        edges.extend(graph::realtime_edges(&timed));
        edges
    }

    fn committed_writer(&self, key: usize, value: u64) -> Option<usize> {
        self.writers
            .get(&(key, value))
            .map(|writer| writer.txn)
            .filter(|&txn| self.committed[txn])
    }

    /// The cycle's steps, one sentence each, then its transactions.
    fn explain_cycle(&self, cycle: &[Step], component: usize) -> String {
        let names: Vec<String> = cycle
            .iter()
            .chain(cycle.first())
            .map(|step| format!("T{}", step.node))
            .collect();
        let mut text = format!(
            "{} (one cycle of a component of {component} transactions)\n",
            names.join(" -> ")
        );
        for (at, step) in cycle.iter().enumerate() {
            let next = cycle[(at + 1) % cycle.len()].node;
            let _ = writeln!(text, "  {}", self.explain_step(step.node, next, step.kind));
        }
        for step in cycle {
            let _ = writeln!(text, "  {}", self.describe(step.node, None));
        }
        text.truncate(text.trim_end().len());
        text
    }

    /// Why `from` must precede `to` through an edge of `kind`.
    fn explain_step(&self, from: usize, to: usize, kind: Kinds) -> String {
        let (ext_from, ext_to) = (self.external_reads(from), self.external_reads(to));
        match kind {
            WW => self.ops[from]
                .iter()
                .find_map(|op| {
                    let Op::Append { key, value } = *op else {
                        return None;
                    };
                    let order = &self.orders[key];
                    let at = *self.positions.get(&(key, value))?;
                    let next = order.list.get(*order.next_committed.get(at + 1)?)?;
                    (self.committed_writer(key, *next) == Some(to)).then(|| {
                        format!(
                            "T{from} -ww-> T{to}: T{from} appended {value} to {}, and T{to}'s \
                             append of {next} comes next in its order",
                            self.key_names[key]
                        )
                    })
                })
                .unwrap_or_else(|| format!("T{from} -ww-> T{to}")),
            WR => ext_to
                .iter()
                .find_map(|read| {
                    let last = *read.list.last()?;
                    (self.committed_writer(read.key, last) == Some(from)).then(|| {
                        format!(
                            "T{from} -wr-> T{to}: T{to} read {} = {}, ending in T{from}'s \
                             append of {last}",
                            self.key_names[read.key],
                            list(read.list)
                        )
                    })
                })
                .unwrap_or_else(|| format!("T{from} -wr-> T{to}")),
            RW => ext_from
                .iter()
                .find_map(|read| {
                    let order = &self.orders[read.key];
                    let name = self.key_names[read.key];
                    let next = order
                        .next_committed
                        .get(read.list.len())
                        .and_then(|&at| order.list.get(at));
                    if let Some(&next) = next
                        && self.committed_writer(read.key, next) == Some(to)
                    {
                        return Some(format!(
                            "T{from} -rw-> T{to}: T{from} read {name} = {}, without T{to}'s \
                             append of {next}, which comes next in its order",
                            list(read.list)
                        ));
                    }
                    let &(_, unseen) = order.unseen.iter().find(|&&(txn, _)| txn == to)?;
                    Some(format!(
                        "T{from} -rw-> T{to}: T{from} read {name} = {}, without T{to}'s append \
                         of {unseen}, which committed but which no read ever saw",
                        list(read.list)
                    ))
                })
                .unwrap_or_else(|| format!("T{from} -rw-> T{to}")),
            _ => format!(
                "T{from} -rt-> T{to}: T{from} completed at {} before T{to} began at {}",
                seconds(self.txns[from].ret),
                seconds(self.txns[to].call)
            ),
        }
    }

    fn external_reads(&self, txn: usize) -> Vec<Read<'a>> {
        // Reads are few per transaction; a scan of all of them runs only for explanations.
        self.reads
            .iter()
            .filter(|read| read.txn == txn && read.external)
            .copied()
            .collect()
    }

    /// One line naming a transaction and what it did: every operation when it has few, else
    /// those on the `focus` key (or the first few).
    fn describe(&self, txn: usize, focus: Option<usize>) -> String {
        let t = &self.txns[txn];
        let status = match t.status {
            TxnStatus::Ok => "ok",
            TxnStatus::Fail => "failed",
            TxnStatus::Info => "unknown",
        };
        let ended = if t.ret == RETURN_NEVER {
            "never".to_owned()
        } else {
            seconds(t.ret)
        };
        let focus = focus.map(|key| self.key_names[key]);
        let shown: Vec<String> = t
            .ops
            .iter()
            .filter(|mop| {
                t.ops.len() <= DESCRIBED_OPS_MAX || focus.is_none_or(|key| mop.key() == key)
            })
            .take(DESCRIBED_OPS_MAX)
            .map(|mop| match mop {
                Mop::Append { key, value } => format!("append {key} {value}"),
                Mop::Read {
                    key,
                    value: Some(read),
                } => format!("read {key} {}", list(read)),
                Mop::Read { key, value: None } => format!("read {key} ?"),
            })
            .collect();
        let hidden = t.ops.len() - shown.len();
        let more = if hidden > 0 {
            format!(", and {hidden} more")
        } else {
            String::new()
        };
        format!(
            "T{txn} (process {}, {status}, {}..{ended}): {}{more}",
            t.process,
            seconds(t.call),
            shown.join(", ")
        )
    }
}

/// A list as `[1 2 3]`, only its last few elements when long (`[…(37) 38 39 40]`).
fn list(values: &[u64]) -> String {
    render(values, values.len().saturating_sub(LIST_TAIL_SHOWN_MAX))
}

/// A list shown from a little before position `focus`, where something interesting happens.
fn list_from(values: &[u64], focus: usize) -> String {
    render(values, focus.saturating_sub(LIST_CONTEXT_SHOWN))
}

/// A list shown around the first occurrence of `value`.
fn list_around(values: &[u64], value: u64) -> String {
    list_from(values, values.iter().position(|&v| v == value).unwrap_or(0))
}

/// `values[start..]` as `[…(start) a b c …]`: at most [`LIST_TAIL_SHOWN_MAX`] elements, with the
/// count of those elided before them.
fn render(values: &[u64], start: usize) -> String {
    let start = start.min(values.len());
    let shown: Vec<String> = values[start..]
        .iter()
        .take(LIST_TAIL_SHOWN_MAX)
        .map(u64::to_string)
        .collect();
    let mut text = String::from("[");
    if start > 0 {
        let _ = write!(text, "…({start}) ");
    }
    text.push_str(&shown.join(" "));
    if start + shown.len() < values.len() {
        text.push_str(" …");
    }
    text.push(']');
    text
}

fn seconds(time: Time) -> String {
    format!("{:.3}s", Duration::from_nanos(time).as_secs_f64())
}
