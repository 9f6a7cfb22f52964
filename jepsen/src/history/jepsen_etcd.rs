//! Parser for the log of Jepsen's etcd register test (the `jepsen-etcd/etcd_NNN.log` fixtures).
//!
//! Owns the line format only: `INFO  jepsen.util - PROCESS<TAB>:TYPE<TAB>:F<TAB>VALUE[<TAB>...]`,
//! with `:F` one of `:read`, `:write`, `:cas`. Lines whose process is not an integer (set-up,
//! `:nemesis`) are not events and are skipped. Times are line numbers.
//! Must not: judge the history; pairing and outcome rules live in [`super::Pairing`].

use std::io::BufRead;

use super::{Completion, History, Pairing, ParseError, Time};
use crate::model::register::{RegisterInput, RegisterOutput, RegisterValue};

/// What separates the logger's prefix from the event fields.
const EVENT_MARKER: &str = "jepsen.util - ";

/// Reads a whole log.
///
/// # Errors
/// On I/O failure, or on an event line that is malformed or breaks the pairing rules.
pub fn parse(reader: impl BufRead) -> Result<History<RegisterInput, RegisterOutput>, ParseError> {
    let mut pairing = Pairing::new();
    for (index, line) in reader.lines().enumerate() {
        let line_number = index + 1;
        let line = line?;
        let Some(event) = event_fields(&line) else {
            continue;
        };
        let syntax = |message: String| ParseError::Syntax {
            line: line_number,
            message,
        };
        let [process, kind, function, value] = event;
        let process: u64 = process
            .parse()
            .map_err(|_| syntax(format!("bad process {process:?}")))?;
        let time = line_number as Time;
        match kind {
            ":invoke" => {
                let input = parse_input(function, value).map_err(syntax)?;
                pairing.invoke(line_number, process, time, input)?;
            }
            ":ok" | ":fail" | ":info" => pairing.complete(line_number, process, time, |input| {
                let invoked = function_of(input);
                if invoked != function {
                    return Err(ParseError::Mismatch {
                        line: line_number,
                        process,
                        invoked: invoked.to_owned(),
                        completed: function.to_owned(),
                    });
                }
                Ok(match kind {
                    ":ok" => Completion::Ok(parse_output(input, value).map_err(syntax)?),
                    // A failed cas did not happen; a failed read (timed out) tells nothing.
                    ":fail" => Completion::Fail,
                    _ => Completion::Info,
                })
            })?,
            other => return Err(syntax(format!("unknown event type {other:?}"))),
        }
    }
    Ok(pairing.finish())
}

/// The four event fields, or `None` if the line is not an event.
fn event_fields(line: &str) -> Option<[&str; 4]> {
    let (_, rest) = line.split_once(EVENT_MARKER)?;
    let mut fields = rest.split('\t');
    let process = fields.next()?;
    if process.is_empty() || !process.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    // Anything after the value (an error description) is ignored.
    Some([
        process,
        fields.next()?,
        fields.next()?,
        fields.next().unwrap_or("nil"),
    ])
}

fn function_of(input: &RegisterInput) -> &'static str {
    match input {
        RegisterInput::Read => ":read",
        RegisterInput::Write { .. } => ":write",
        RegisterInput::Cas { .. } => ":cas",
    }
}

fn parse_input(function: &str, value: &str) -> Result<RegisterInput, String> {
    Ok(match function {
        ":read" => RegisterInput::Read,
        ":write" => RegisterInput::Write {
            value: parse_int(value)?,
        },
        ":cas" => {
            let (expected, new) = parse_pair(value)?;
            RegisterInput::Cas { expected, new }
        }
        other => return Err(format!("unknown function {other:?}")),
    })
}

fn parse_output(input: &RegisterInput, value: &str) -> Result<RegisterOutput, String> {
    Ok(match input {
        RegisterInput::Read => {
            let value = if value == "nil" {
                None
            } else {
                Some(parse_int(value)?)
            };
            RegisterOutput::Read { value }
        }
        RegisterInput::Write { .. } => RegisterOutput::Write,
        // Jepsen reports a cas whose compare failed as `:fail`; `:ok` means it applied.
        RegisterInput::Cas { .. } => RegisterOutput::Cas { succeeded: true },
    })
}

fn parse_int(text: &str) -> Result<RegisterValue, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("expected an integer, found {text:?}"))
}

/// `[old new]`.
fn parse_pair(text: &str) -> Result<(RegisterValue, RegisterValue), String> {
    let inner = text
        .trim()
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .ok_or_else(|| format!("expected [old new], found {text:?}"))?;
    let mut parts = inner.split([' ', ',']).filter(|part| !part.is_empty());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(old), Some(new), None) => Ok((parse_int(old)?, parse_int(new)?)),
        _ => Err(format!("expected [old new], found {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Outcome, RETURN_NEVER};

    fn log(lines: &[&str]) -> String {
        let mut text = String::new();
        for line in lines {
            text.push_str("INFO  jepsen.util - ");
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    #[test]
    fn pairs_events_and_applies_outcome_rules() {
        let text = log(&[
            "0\t:invoke\t:read\tnil",
            "1\t:invoke\t:write\t3",
            "2\t:invoke\t:cas\t[3 4]",
            "3\t:invoke\t:read\tnil",
            "0\t:ok\t:read\tnil",
            "1\t:info\t:write\t3",
            "2\t:fail\t:cas\t[3 4]",
            "3\t:fail\t:read\t:timed-out",
            "4\t:invoke\t:cas\t[0 1]",
            "5\t:invoke\t:write\t2",
            "5\t:ok\t:write\t2",
        ]);
        let mut with_noise = String::from("INFO  jepsen.core - Running test\n");
        with_noise.push_str(&text);
        with_noise.push_str("INFO  jepsen.util - :nemesis\t:info\t:start\tnil\n");
        let history = parse(with_noise.as_bytes()).unwrap();
        assert_eq!(
            history.ops(),
            [
                Op {
                    process: 0,
                    call: 2,
                    ret: 6,
                    input: RegisterInput::Read,
                    output: Outcome::Returned(RegisterOutput::Read { value: None }),
                },
                // `:info`: unknown and open until the end.
                Op {
                    process: 1,
                    call: 3,
                    ret: RETURN_NEVER,
                    input: RegisterInput::Write { value: 3 },
                    output: Outcome::Unknown,
                },
                // Never completed: unknown too.
                Op {
                    process: 4,
                    call: 10,
                    ret: RETURN_NEVER,
                    input: RegisterInput::Cas {
                        expected: 0,
                        new: 1
                    },
                    output: Outcome::Unknown,
                },
                Op {
                    process: 5,
                    call: 11,
                    ret: 12,
                    input: RegisterInput::Write { value: 2 },
                    output: Outcome::Returned(RegisterOutput::Write),
                },
            ]
        );
    }

    #[test]
    fn ok_cas_succeeded_and_read_values_parse() {
        let text = log(&[
            "0\t:invoke\t:cas\t[1 2]",
            "0\t:ok\t:cas\t[1 2]",
            "0\t:invoke\t:read\tnil",
            "0\t:ok\t:read\t4",
        ]);
        let history = parse(text.as_bytes()).unwrap();
        assert_eq!(
            history.ops()[0].output,
            Outcome::Returned(RegisterOutput::Cas { succeeded: true })
        );
        assert_eq!(
            history.ops()[1].output,
            Outcome::Returned(RegisterOutput::Read { value: Some(4) })
        );
    }

    #[test]
    fn rejects_malformed_events() {
        let mismatch = log(&["0\t:invoke\t:read\tnil", "0\t:ok\t:write\t1"]);
        assert!(matches!(
            parse(mismatch.as_bytes()),
            Err(ParseError::Mismatch { line: 2, .. })
        ));
        let bad_pair = log(&["0\t:invoke\t:cas\t[1]"]);
        assert!(matches!(
            parse(bad_pair.as_bytes()),
            Err(ParseError::Syntax { line: 1, .. })
        ));
        let bad_type = log(&["0\t:invoke\t:read\tnil", "0\t:done\t:read\tnil"]);
        assert!(matches!(
            parse(bad_type.as_bytes()),
            Err(ParseError::Syntax { line: 2, .. })
        ));
        let orphan = log(&["0\t:ok\t:read\tnil"]);
        assert!(matches!(
            parse(orphan.as_bytes()),
            Err(ParseError::NotOpen { .. })
        ));
    }
}
