//! Operation histories: what a run observed, as operations with real-time intervals.
//!
//! Owns the [`Op`] and [`History`] types that every checker reads, the rule that turns a stream of
//! invoke/complete events into operations ([`Pairing`]), and, in its submodules, the parsers for
//! the three on-disk formats: Jepsen's etcd log ([`jepsen_etcd`]), porcupine's kv EDN lines
//! ([`edn_kv`]) and our own JSON lines ([`jsonl`]), which a live run writes through [`recorder`].
//!
//! Must not: decide whether anything is linearizable, or interpret an operation beyond pairing its
//! call with its completion. The parsers build operations in the vocabularies of [`crate::model`],
//! so the submodules depend on `model`; the core types here depend on nothing.
//!
//! Outcome classes, shared by every format:
//! - `ok`: the operation happened, with this result; its interval is `[call, ret]`.
//! - `fail`: the operation certainly did not happen. It is dropped: it constrains nothing.
//! - `info`, or no completion at all: unknown. It may have happened at any time after its call, or
//!   never. It is kept with [`Outcome::Unknown`] and `ret = `[`RETURN_NEVER`].

pub mod edn_kv;
pub mod jepsen_etcd;
pub mod jsonl;
pub mod recorder;

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A point in time. Only the order matters: the fixture formats use line numbers, our own JSONL
/// uses nanoseconds since the start of the run.
pub type Time = u64;

/// The return time of an operation whose completion is unknown: later than every real time, so
/// that it is concurrent with everything that starts after its call.
pub const RETURN_NEVER: Time = Time::MAX;

/// What an operation returned, as far as the client knows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome<O> {
    /// The operation completed with this result.
    Returned(O),
    /// The client never learned the result (timeout, connection lost, process gone): the
    /// operation may have taken effect with any result, or not at all.
    Unknown,
}

impl<O: fmt::Debug> fmt::Display for Outcome<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Returned(output) => write!(f, "{output:?}"),
            Outcome::Unknown => f.write_str("unknown"),
        }
    }
}

/// One operation of one client: a closed interval `[call, ret]` of real time in which it took
/// effect, if it took effect at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op<I, O> {
    /// The logical client (Jepsen's "process") that issued it. A process runs one operation at a
    /// time; after an unknown outcome the client continues under a new id.
    pub process: u64,
    /// When the request was sent.
    pub call: Time,
    /// When the response arrived, or [`RETURN_NEVER`].
    pub ret: Time,
    /// The request.
    pub input: I,
    /// The response.
    pub output: Outcome<O>,
}

impl<I: fmt::Debug, O: fmt::Debug> fmt::Display for Op<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {} [{}, ", self.process, self.call)?;
        if self.ret == RETURN_NEVER {
            f.write_str("never]")?;
        } else {
            write!(f, "{}]", self.ret)?;
        }
        write!(f, " {:?} -> {}", self.input, self.output)
    }
}

/// A set of operations. Their order in the vector carries no meaning; the checker orders them by
/// time. The parsers sort them by call time so that operation indexes read naturally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History<I, O> {
    ops: Vec<Op<I, O>>,
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        History { ops: Vec::new() }
    }
}

impl<I, O> History<I, O> {
    /// An empty history.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one operation.
    ///
    /// # Panics
    /// If `op.ret < op.call`, or if `op.call` is [`RETURN_NEVER`]: such an operation is a bug in
    /// whoever built it (the parsers reject such input with an error first).
    pub fn push(&mut self, op: Op<I, O>) {
        assert!(op.call != RETURN_NEVER, "call time {} is reserved", op.call);
        assert!(
            op.call <= op.ret,
            "return {} before call {}",
            op.ret,
            op.call
        );
        self.ops.push(op);
    }

    /// The operations.
    #[must_use]
    pub fn ops(&self) -> &[Op<I, O>] {
        &self.ops
    }

    /// How many operations there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn sort_by_call(&mut self) {
        // Stable, so equal call times keep their input order.
        self.ops.sort_by_key(|op| op.call);
    }
}

/// Why a history file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The file could not be read.
    #[error("cannot read history: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not in the expected format.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A process invoked an operation while its previous one was still open.
    #[error(
        "line {line}: process {process} invoked again while its operation from line {open_line} is open"
    )]
    AlreadyOpen {
        /// 1-based line number of the second invoke.
        line: usize,
        /// The process.
        process: u64,
        /// 1-based line number of the open invoke.
        open_line: usize,
    },
    /// A process completed an operation it had not invoked.
    #[error("line {line}: process {process} completed an operation it never invoked")]
    NotOpen {
        /// 1-based line number of the completion.
        line: usize,
        /// The process.
        process: u64,
    },
    /// A completion names a different operation than its invoke.
    #[error("line {line}: process {process} completed {completed} but invoked {invoked}")]
    Mismatch {
        /// 1-based line number of the completion.
        line: usize,
        /// The process.
        process: u64,
        /// The operation named by the invoke.
        invoked: String,
        /// The operation named by the completion.
        completed: String,
    },
    /// A completion is earlier than its invoke, or a time is out of range.
    #[error("line {line}: {message}")]
    BadTime {
        /// 1-based line number.
        line: usize,
        /// What is wrong with the time.
        message: String,
    },
}

/// How an invoked operation ended.
pub(crate) enum Completion<O> {
    /// `ok`: it happened, with this result.
    Ok(O),
    /// `fail`: it certainly did not happen.
    Fail,
    /// `info`: unknown.
    Info,
}

struct OpenOp<I> {
    line: usize,
    call: Time,
    input: I,
}

/// Turns invoke and completion events into operations, enforcing one open operation per process.
pub(crate) struct Pairing<I, O> {
    open: HashMap<u64, OpenOp<I>>,
    history: History<I, O>,
}

impl<I, O> Pairing<I, O> {
    pub(crate) fn new() -> Self {
        Pairing {
            open: HashMap::new(),
            history: History::new(),
        }
    }

    pub(crate) fn invoke(
        &mut self,
        line: usize,
        process: u64,
        call: Time,
        input: I,
    ) -> Result<(), ParseError> {
        if call == RETURN_NEVER {
            return Err(ParseError::BadTime {
                line,
                message: format!("time {call} is reserved"),
            });
        }
        if let Some(open) = self.open.get(&process) {
            return Err(ParseError::AlreadyOpen {
                line,
                process,
                open_line: open.line,
            });
        }
        self.open.insert(process, OpenOp { line, call, input });
        Ok(())
    }

    /// Completes the open operation of `process`. `complete` sees the input and decides the
    /// outcome; it may reject the line (say, a completion of a different function).
    pub(crate) fn complete(
        &mut self,
        line: usize,
        process: u64,
        ret: Time,
        complete: impl FnOnce(&I) -> Result<Completion<O>, ParseError>,
    ) -> Result<(), ParseError> {
        let Some(open) = self.open.remove(&process) else {
            return Err(ParseError::NotOpen { line, process });
        };
        if ret < open.call || ret == RETURN_NEVER {
            return Err(ParseError::BadTime {
                line,
                message: format!(
                    "completion at {ret} but the call from line {} is at {}",
                    open.line, open.call
                ),
            });
        }
        let (ret, output) = match complete(&open.input)? {
            Completion::Ok(output) => (ret, Outcome::Returned(output)),
            Completion::Fail => return Ok(()),
            // An `info` is open until the end: the operation may take effect after the client gave
            // up on it.
            Completion::Info => (RETURN_NEVER, Outcome::Unknown),
        };
        self.history.push(Op {
            process,
            call: open.call,
            ret,
            input: open.input,
            output,
        });
        Ok(())
    }

    /// Ends the stream: operations still open are unknown.
    pub(crate) fn finish(mut self) -> History<I, O> {
        for (process, open) in self.open {
            self.history.push(Op {
                process,
                call: open.call,
                ret: RETURN_NEVER,
                input: open.input,
                output: Outcome::Unknown,
            });
        }
        self.history.sort_by_call();
        self.history
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_is_dropped_info_and_never_completed_are_unknown() {
        let mut pairing: Pairing<&str, u32> = Pairing::new();
        pairing.invoke(1, 1, 1, "a").unwrap();
        pairing.invoke(2, 2, 2, "b").unwrap();
        pairing.invoke(3, 3, 3, "c").unwrap();
        pairing.invoke(4, 4, 4, "d").unwrap();
        pairing
            .complete(5, 1, 5, |_| Ok(Completion::Ok(7)))
            .unwrap();
        pairing.complete(6, 2, 6, |_| Ok(Completion::Fail)).unwrap();
        pairing.complete(7, 3, 7, |_| Ok(Completion::Info)).unwrap();
        let history = pairing.finish();
        let ops = history.ops();
        assert_eq!(ops.len(), 3);
        assert_eq!(
            ops[0],
            Op {
                process: 1,
                call: 1,
                ret: 5,
                input: "a",
                output: Outcome::Returned(7)
            }
        );
        assert_eq!(
            (ops[1].input, ops[1].ret, &ops[1].output),
            ("c", RETURN_NEVER, &Outcome::Unknown)
        );
        assert_eq!(
            (ops[2].input, ops[2].ret, &ops[2].output),
            ("d", RETURN_NEVER, &Outcome::Unknown)
        );
    }

    #[test]
    fn pairing_rejects_overlap_orphans_and_time_reversal() {
        let mut pairing: Pairing<&str, u32> = Pairing::new();
        pairing.invoke(1, 1, 10, "a").unwrap();
        assert!(matches!(
            pairing.invoke(2, 1, 11, "b"),
            Err(ParseError::AlreadyOpen { open_line: 1, .. })
        ));
        assert!(matches!(
            pairing.complete(3, 2, 12, |_| Ok(Completion::Ok(1))),
            Err(ParseError::NotOpen { process: 2, .. })
        ));
        assert!(matches!(
            pairing.complete(4, 1, 9, |_| Ok(Completion::Ok(1))),
            Err(ParseError::BadTime { .. })
        ));
    }

    #[test]
    #[should_panic(expected = "before call")]
    fn push_rejects_reversed_interval() {
        let mut history: History<(), ()> = History::new();
        history.push(Op {
            process: 0,
            call: 5,
            ret: 4,
            input: (),
            output: Outcome::Unknown,
        });
    }
}
