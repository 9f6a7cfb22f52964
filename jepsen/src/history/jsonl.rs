//! Our own history format, JSON lines, which the harness records and `mnemo-jepsen check` reads.
//!
//! Owns the format's definition, its reader [`parse`] and its writer [`write`].
//! Must not: know how the harness obtains events; it only defines what a line says.
//!
//! # Format (version 1)
//! The first line is a header naming the model the operations belong to:
//! ```json
//! {"format":"mnemo-history","version":1,"model":"etcd"}
//! ```
//! `model` is `register`, `kv` or `etcd` (checked for linearizability), or `append`, `watch` or
//! `lease` (the live workloads' own vocabularies, judged by their own checkers). Every further
//! non-empty line is one event:
//! ```json
//! {"type":"invoke","process":7,"time":1200,"input":{"key":"r/41","f":"put","value":"v1"}}
//! {"type":"ok","process":7,"time":1450,"output":{"f":"put","revision":203}}
//! {"type":"invoke","process":8,"time":1300,"input":{"key":"r/41","f":"get"}}
//! {"type":"info","process":8,"time":6300}
//! ```
//! - `process`: the logical client. One operation open at a time; after `info` the client must
//!   continue under a new id, since its old operation stays open forever.
//! - `time`: nanoseconds since the run started, from one monotonic clock. A call is stamped just
//!   before the request is sent, a completion just after the response arrives. Intervals are
//!   closed: equal times mean concurrent.
//! - `type`: `invoke` carries `input`; `ok` carries `output` (the operation happened with this
//!   result); `fail` means it certainly did not happen (dropped); `info` means unknown (kept with
//!   an unknown result, open until the end of the history). An invoke never completed is unknown.
//!   Lines of any other type (say `nemesis`) are ignored, so the harness may interleave them.
//! - `nemesis` lines, as the harness ([`super::recorder`]) writes them, say what the nemesis did
//!   and when: `{"type":"nemesis","time":5012000000,"f":"start-partition","value":{"target":"n2",
//!   "leader":true,"cut":[["n1","n2"],["n2","n3"]]}}`. `f` is `start-kill`, `stop-kill`,
//!   `start-pause`, `stop-pause`, `start-partition`, `stop-partition` or `heal`; `value` names the
//!   targets, and carries an `error` when the action failed. They need no new version: readers of
//!   version 1 skip them.
//! - `input` and `output` are the model's vocabulary, serialized as in [`crate::model::register`],
//!   [`crate::model::kv`] and [`crate::model::etcd`]: an `"f"` field names the function, and a
//!   response must name the same function as its request.
//!
//! A compare-and-set whose compare failed is an `ok` with `"succeeded":false`, not a `fail`: it did
//! happen, and what it saw is evidence.

use std::io::{BufRead, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Completion, History, Outcome, Pairing, ParseError, RETURN_NEVER, Time};
use crate::model::FunctionName;
use crate::model::etcd::{EtcdInput, EtcdOutput};
use crate::model::kv::{KvInput, KvOutput};
use crate::model::register::{RegisterInput, RegisterOutput};

/// The header's `format` value.
pub const FORMAT_NAME: &str = "mnemo-history";

/// The header's `version` value this module reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The first line of a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Always [`FORMAT_VERSION`].
    pub version: u32,
    /// Whose vocabulary the events use.
    pub model: ModelName,
}

/// The models a file can be written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelName {
    /// [`crate::model::register`].
    Register,
    /// [`crate::model::kv`].
    Kv,
    /// [`crate::model::etcd`].
    Etcd,
    /// The `append` workload's transactions ([`crate::workload::append`]).
    Append,
    /// The `watch` workload's writes ([`crate::workload::watch`]).
    Watch,
    /// The `lease` workload's operations ([`crate::workload::lease`]).
    Lease,
}

/// The kinds of event line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A request was sent.
    Invoke,
    /// It happened, with a result.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// Its outcome is unknown.
    Info,
}

/// One event line, as the harness writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event<I, O> {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The logical client.
    pub process: u64,
    /// Nanoseconds since the run started.
    pub time: Time,
    /// The request, on `invoke`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<I>,
    /// The response, on `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<O>,
}

/// A history in one of the models' vocabularies, as a file's header chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyHistory {
    /// Register operations.
    Register(History<RegisterInput, RegisterOutput>),
    /// Key-value operations.
    Kv(History<KvInput, KvOutput>),
    /// Per-key etcd operations.
    Etcd(History<EtcdInput, EtcdOutput>),
}

/// A line before we know whether its type is one we read.
#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    process: Option<u64>,
    time: Option<Time>,
    input: Option<serde_json::Value>,
    output: Option<serde_json::Value>,
}

/// Reads a whole file.
///
/// # Errors
/// On I/O failure, a missing or unsupported header, or an event line that is malformed or breaks
/// the pairing rules.
pub fn parse(reader: impl BufRead) -> Result<AnyHistory, ParseError> {
    let mut lines = numbered(reader);
    let header = read_header(&mut lines)?;
    Ok(match header.model {
        ModelName::Register => AnyHistory::Register(parse_events(lines)?),
        ModelName::Kv => AnyHistory::Kv(parse_events(lines)?),
        ModelName::Etcd => AnyHistory::Etcd(parse_events(lines)?),
        other @ (ModelName::Append | ModelName::Watch | ModelName::Lease) => {
            return Err(header_syntax(format!(
                "a {other:?} history is judged by its workload's checker, not by linearizability"
            )));
        }
    })
}

/// Reads a whole file whose header must name `model`, into that model's vocabulary: for the
/// workloads whose checkers read their own histories (`lease`).
///
/// # Errors
/// As [`parse`], and a header naming another model.
pub fn parse_model<I, O>(
    reader: impl BufRead,
    model: ModelName,
) -> Result<History<I, O>, ParseError>
where
    I: DeserializeOwned + FunctionName,
    O: DeserializeOwned + FunctionName,
{
    let mut lines = numbered(reader);
    let header = read_header(&mut lines)?;
    if header.model != model {
        return Err(header_syntax(format!(
            "expected a {model:?} history, got a {:?} one",
            header.model
        )));
    }
    parse_events(lines)
}

fn numbered(reader: impl BufRead) -> impl Iterator<Item = (usize, std::io::Result<String>)> {
    reader
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line))
}

fn header_syntax(message: String) -> ParseError {
    ParseError::Syntax { line: 1, message }
}

/// Reads and checks the header line.
fn read_header(
    lines: &mut impl Iterator<Item = (usize, std::io::Result<String>)>,
) -> Result<Header, ParseError> {
    let header_line = match lines.next() {
        Some((_, line)) => line?,
        None => {
            return Err(header_syntax(
                "empty file: expected a header line".to_owned(),
            ));
        }
    };
    let header: Header = serde_json::from_str(&header_line)
        .map_err(|error| header_syntax(format!("bad header: {error}")))?;
    if header.format != FORMAT_NAME || header.version != FORMAT_VERSION {
        return Err(header_syntax(format!(
            "unsupported format {:?} version {} (expected {FORMAT_NAME:?} version {FORMAT_VERSION})",
            header.format, header.version
        )));
    }
    Ok(header)
}

fn parse_events<I, O>(
    lines: impl Iterator<Item = (usize, std::io::Result<String>)>,
) -> Result<History<I, O>, ParseError>
where
    I: DeserializeOwned + FunctionName,
    O: DeserializeOwned + FunctionName,
{
    let mut pairing = Pairing::new();
    for (line_number, line) in lines {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let syntax = |message: String| ParseError::Syntax {
            line: line_number,
            message,
        };
        let raw: RawEvent =
            serde_json::from_str(&line).map_err(|error| syntax(format!("bad event: {error}")))?;
        let kind = match raw.kind.as_str() {
            "invoke" => EventType::Invoke,
            "ok" => EventType::Ok,
            "fail" => EventType::Fail,
            "info" => EventType::Info,
            _ => continue,
        };
        let process = raw
            .process
            .ok_or_else(|| syntax("missing \"process\"".to_owned()))?;
        let time = raw
            .time
            .ok_or_else(|| syntax("missing \"time\"".to_owned()))?;
        match kind {
            EventType::Invoke => {
                let input: I = decode(raw.input, "input").map_err(syntax)?;
                pairing.invoke(line_number, process, time, input)?;
            }
            EventType::Ok => {
                let output: O = decode(raw.output, "output").map_err(syntax)?;
                pairing.complete(line_number, process, time, |input| {
                    if input.function_name() != output.function_name() {
                        return Err(ParseError::Mismatch {
                            line: line_number,
                            process,
                            invoked: input.function_name().to_owned(),
                            completed: output.function_name().to_owned(),
                        });
                    }
                    Ok(Completion::Ok(output))
                })?;
            }
            EventType::Fail => {
                pairing.complete(line_number, process, time, |_| Ok(Completion::Fail))?;
            }
            EventType::Info => {
                pairing.complete(line_number, process, time, |_| Ok(Completion::Info))?;
            }
        }
    }
    Ok(pairing.finish())
}

/// Deserializes an event's `input` or `output` field.
fn decode<T: DeserializeOwned>(value: Option<serde_json::Value>, field: &str) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("missing {field:?}"))?;
    serde_json::from_value(value).map_err(|error| format!("bad {field:?}: {error}"))
}

/// Writes `history` in this format: the header, then each operation's invoke and completion in
/// time order. An unknown operation with a finite return time is written as an `info` at that time,
/// which reads back as open until the end.
///
/// # Errors
/// On I/O failure.
pub fn write<I, O>(
    mut writer: impl Write,
    model: ModelName,
    history: &History<I, O>,
) -> std::io::Result<()>
where
    I: Serialize + Clone,
    O: Serialize + Clone,
{
    let header = Header {
        format: FORMAT_NAME.to_owned(),
        version: FORMAT_VERSION,
        model,
    };
    serde_json::to_writer(&mut writer, &header)?;
    writer.write_all(b"\n")?;
    let mut ops: Vec<_> = history.ops().iter().collect();
    ops.sort_by_key(|op| (op.call, op.ret));
    let mut events: Vec<Event<I, O>> = Vec::with_capacity(2 * ops.len());
    for op in ops {
        let event = |kind, time| Event {
            kind,
            process: op.process,
            time,
            input: None,
            output: None,
        };
        events.push(Event {
            input: Some(op.input.clone()),
            ..event(EventType::Invoke, op.call)
        });
        match &op.output {
            Outcome::Returned(output) => {
                events.push(Event {
                    output: Some(output.clone()),
                    ..event(EventType::Ok, op.ret)
                });
            }
            Outcome::Unknown if op.ret != RETURN_NEVER => {
                events.push(event(EventType::Info, op.ret));
            }
            Outcome::Unknown => {}
        }
    }
    // Stable: a process's completion stays before its next invoke at the same time.
    events.sort_by_key(|event| event.time);
    for event in &events {
        serde_json::to_writer(&mut writer, event)?;
        writer.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Op;
    use crate::model::etcd::EtcdOp;

    const EXAMPLE: &str = r#"{"format":"mnemo-history","version":1,"model":"etcd"}
{"type":"invoke","process":7,"time":1200,"input":{"key":"r/41","f":"put","value":"v1"}}
{"type":"nemesis","f":"start-partition","value":{"n1":["n2","n3"]},"time":1250}
{"type":"invoke","process":8,"time":1300,"input":{"key":"r/41","f":"get"}}
{"type":"ok","process":7,"time":1450,"output":{"f":"put","revision":203}}
{"type":"info","process":8,"time":6300}
{"type":"invoke","process":9,"time":6400,"input":{"key":"r/41","f":"delete"}}
{"type":"fail","process":9,"time":6500}

{"type":"invoke","process":10,"time":6600,"input":{"key":"r/42","f":"put","value":"v2"}}
"#;

    #[test]
    fn parses_the_documented_example() {
        let AnyHistory::Etcd(history) = parse(EXAMPLE.as_bytes()).unwrap() else {
            panic!("header says etcd");
        };
        let put = |key: &str, value: &str| EtcdInput {
            key: key.to_owned(),
            op: EtcdOp::Put {
                value: value.to_owned(),
                prev_kv: false,
            },
        };
        assert_eq!(
            history.ops(),
            [
                Op {
                    process: 7,
                    call: 1200,
                    ret: 1450,
                    input: put("r/41", "v1"),
                    output: Outcome::Returned(EtcdOutput::Put {
                        revision: 203,
                        prev_kv: None
                    }),
                },
                Op {
                    process: 8,
                    call: 1300,
                    ret: RETURN_NEVER,
                    input: EtcdInput {
                        key: "r/41".to_owned(),
                        op: EtcdOp::Get
                    },
                    output: Outcome::Unknown,
                },
                Op {
                    process: 10,
                    call: 6600,
                    ret: RETURN_NEVER,
                    input: put("r/42", "v2"),
                    output: Outcome::Unknown,
                },
            ]
        );
    }

    #[test]
    fn write_then_parse_round_trips() {
        let AnyHistory::Etcd(history) = parse(EXAMPLE.as_bytes()).unwrap() else {
            panic!()
        };
        let mut bytes = Vec::new();
        write(&mut bytes, ModelName::Etcd, &history).unwrap();
        assert_eq!(parse(bytes.as_slice()).unwrap(), AnyHistory::Etcd(history));
    }

    #[test]
    fn rejects_bad_headers_and_mismatched_responses() {
        assert!(matches!(
            parse(&b""[..]),
            Err(ParseError::Syntax { line: 1, .. })
        ));
        let old = r#"{"format":"mnemo-history","version":0,"model":"kv"}"#;
        assert!(matches!(
            parse(old.as_bytes()),
            Err(ParseError::Syntax { line: 1, .. })
        ));
        let mismatch = r#"{"format":"mnemo-history","version":1,"model":"register"}
{"type":"invoke","process":1,"time":1,"input":{"f":"read"}}
{"type":"ok","process":1,"time":2,"output":{"f":"write"}}"#;
        assert!(matches!(
            parse(mismatch.as_bytes()),
            Err(ParseError::Mismatch { line: 3, .. })
        ));
        let missing = r#"{"format":"mnemo-history","version":1,"model":"register"}
{"type":"invoke","process":1,"input":{"f":"read"}}"#;
        assert!(matches!(
            parse(missing.as_bytes()),
            Err(ParseError::Syntax { line: 2, .. })
        ));
    }
}
