//! Parser for porcupine's kv histories (the `kv/cNN-ok.txt` / `kv/cNN-bad.txt` fixtures).
//!
//! Owns the line format: one flat EDN map per line,
//! `{:process P, :type :invoke|:ok|:fail|:info, :f :get|:put|:append, :key "K", :value V}`,
//! and the tiny EDN subset it needs (keywords, integers, strings, `nil`). Times are line numbers.
//! Must not: judge the history; pairing and outcome rules live in [`super::Pairing`].

use std::io::BufRead;

use super::{Completion, History, Pairing, ParseError, Time};
use crate::model::FunctionName;
use crate::model::kv::{KvInput, KvOp, KvOutput};

/// Reads a whole file.
///
/// # Errors
/// On I/O failure, or on a line that is malformed or breaks the pairing rules.
pub fn parse(reader: impl BufRead) -> Result<History<KvInput, KvOutput>, ParseError> {
    let mut pairing = Pairing::new();
    for (index, line) in reader.lines().enumerate() {
        let line_number = index + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let syntax = |message: String| ParseError::Syntax {
            line: line_number,
            message,
        };
        let event = Event::parse(&line).map_err(syntax)?;
        let time = line_number as Time;
        if event.kind == "invoke" {
            let op = match event.function.as_str() {
                "get" => KvOp::Get,
                "put" => KvOp::Put {
                    value: event.string_value().map_err(syntax)?,
                },
                "append" => KvOp::Append {
                    value: event.string_value().map_err(syntax)?,
                },
                other => return Err(syntax(format!("unknown function :{other}"))),
            };
            let input = KvInput {
                key: event.key.clone(),
                op,
            };
            pairing.invoke(line_number, event.process, time, input)?;
            continue;
        }
        pairing.complete(line_number, event.process, time, |input| {
            if input.function_name() != event.function || input.key != event.key {
                return Err(ParseError::Mismatch {
                    line: line_number,
                    process: event.process,
                    invoked: format!(":{} {:?}", input.function_name(), input.key),
                    completed: format!(":{} {:?}", event.function, event.key),
                });
            }
            Ok(match event.kind.as_str() {
                "ok" => Completion::Ok(match input.op {
                    KvOp::Get => KvOutput::Get {
                        value: event.string_value().map_err(syntax)?,
                    },
                    KvOp::Put { .. } => KvOutput::Put,
                    KvOp::Append { .. } => KvOutput::Append,
                }),
                "fail" => Completion::Fail,
                "info" => Completion::Info,
                other => return Err(syntax(format!("unknown event type :{other}"))),
            })
        })?;
    }
    Ok(pairing.finish())
}

/// One line's fields.
struct Event {
    process: u64,
    kind: String,
    function: String,
    key: String,
    value: Edn,
}

impl Event {
    fn parse(line: &str) -> Result<Event, String> {
        let (mut process, mut kind, mut function, mut key, mut value) =
            (None, None, None, None, None);
        for (name, edn) in parse_map(line)? {
            match (name.as_str(), edn) {
                ("process", Edn::Integer(id)) => {
                    process = Some(u64::try_from(id).map_err(|_| format!("bad process {id}"))?);
                }
                ("type", Edn::Keyword(word)) => kind = Some(word),
                ("f", Edn::Keyword(word)) => function = Some(word),
                ("key", Edn::String(text)) => key = Some(text),
                ("value", edn) => value = Some(edn),
                (name, edn) => return Err(format!("unexpected :{name} {edn:?}")),
            }
        }
        let missing = |name: &str| format!("missing :{name}");
        Ok(Event {
            process: process.ok_or_else(|| missing("process"))?,
            kind: kind.ok_or_else(|| missing("type"))?,
            function: function.ok_or_else(|| missing("f"))?,
            key: key.ok_or_else(|| missing("key"))?,
            value: value.unwrap_or(Edn::Nil),
        })
    }

    fn string_value(&self) -> Result<String, String> {
        match &self.value {
            Edn::String(text) => Ok(text.clone()),
            other => Err(format!("expected a string :value, found {other:?}")),
        }
    }
}

/// The EDN values these files contain.
#[derive(Debug, PartialEq)]
enum Edn {
    Nil,
    Integer(i64),
    String(String),
    Keyword(String),
}

/// `{:k v, :k v}` into (keyword name, value) pairs. Commas are whitespace in EDN.
fn parse_map(line: &str) -> Result<Vec<(String, Edn)>, String> {
    let body = line
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or("expected a {...} map")?;
    let mut cursor = Cursor { rest: body };
    let mut pairs = Vec::new();
    while let Some(name) = cursor.next_value()? {
        let Edn::Keyword(name) = name else {
            return Err(format!("map keys must be keywords, found {name:?}"));
        };
        let value = cursor
            .next_value()?
            .ok_or_else(|| format!(":{name} has no value"))?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

struct Cursor<'a> {
    rest: &'a str,
}

impl Cursor<'_> {
    fn next_value(&mut self) -> Result<Option<Edn>, String> {
        self.rest = self
            .rest
            .trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        let Some(first) = self.rest.chars().next() else {
            return Ok(None);
        };
        if first == '"' {
            return self.string().map(Some);
        }
        let end = self
            .rest
            .find(|c: char| c.is_whitespace() || c == ',')
            .unwrap_or(self.rest.len());
        let (token, rest) = self.rest.split_at(end);
        self.rest = rest;
        Ok(Some(if token == "nil" {
            Edn::Nil
        } else if let Some(word) = token.strip_prefix(':') {
            Edn::Keyword(word.to_owned())
        } else {
            Edn::Integer(
                token
                    .parse()
                    .map_err(|_| format!("unexpected token {token:?}"))?,
            )
        }))
    }

    fn string(&mut self) -> Result<Edn, String> {
        let mut text = String::new();
        let mut chars = self.rest.char_indices().skip(1);
        while let Some((at, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[at + 1..];
                    return Ok(Edn::String(text));
                }
                '\\' => text.push(match chars.next() {
                    Some((_, 'n')) => '\n',
                    Some((_, 't')) => '\t',
                    Some((_, 'r')) => '\r',
                    Some((_, escaped @ ('"' | '\\'))) => escaped,
                    other => return Err(format!("unsupported escape {other:?}")),
                }),
                c => text.push(c),
            }
        }
        Err("unterminated string".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Outcome, RETURN_NEVER};

    fn input(key: &str, op: KvOp) -> KvInput {
        KvInput {
            key: key.to_owned(),
            op,
        }
    }

    #[test]
    fn pairs_events_and_applies_outcome_rules() {
        let text = r#"{:process 0, :type :invoke, :f :get, :key "5", :value nil}
{:process 1, :type :invoke, :f :put, :key "5", :value "x 1 0 y"}
{:process 2, :type :invoke, :f :append, :key "6", :value "a\"b"}
{:process 3, :type :invoke, :f :append, :key "6", :value "c"}
{:process 0, :type :ok, :f :get, :key "5", :value ""}
{:process 1, :type :info, :f :put, :key "5", :value "x 1 0 y"}
{:process 2, :type :fail, :f :append, :key "6", :value "a\"b"}
"#;
        let history = parse(text.as_bytes()).unwrap();
        assert_eq!(
            history.ops(),
            [
                Op {
                    process: 0,
                    call: 1,
                    ret: 5,
                    input: input("5", KvOp::Get),
                    output: Outcome::Returned(KvOutput::Get {
                        value: String::new()
                    }),
                },
                Op {
                    process: 1,
                    call: 2,
                    ret: RETURN_NEVER,
                    input: input(
                        "5",
                        KvOp::Put {
                            value: "x 1 0 y".to_owned()
                        }
                    ),
                    output: Outcome::Unknown,
                },
                // Never completed.
                Op {
                    process: 3,
                    call: 4,
                    ret: RETURN_NEVER,
                    input: input(
                        "6",
                        KvOp::Append {
                            value: "c".to_owned()
                        }
                    ),
                    output: Outcome::Unknown,
                },
            ]
        );
    }

    #[test]
    fn edn_subset() {
        let pairs = parse_map(r#"{:a 1, :b "x\\y\n", :c nil, :d :kw}"#).unwrap();
        assert_eq!(
            pairs,
            [
                ("a".to_owned(), Edn::Integer(1)),
                ("b".to_owned(), Edn::String("x\\y\n".to_owned())),
                ("c".to_owned(), Edn::Nil),
                ("d".to_owned(), Edn::Keyword("kw".to_owned())),
            ]
        );
        assert!(parse_map(r#"{:a "open}"#).is_err());
        assert!(parse_map(":a 1").is_err());
    }

    #[test]
    fn rejects_a_completion_on_another_key() {
        let text = r#"{:process 0, :type :invoke, :f :get, :key "5", :value nil}
{:process 0, :type :ok, :f :get, :key "6", :value ""}"#;
        assert!(matches!(
            parse(text.as_bytes()),
            Err(ParseError::Mismatch { line: 2, .. })
        ));
    }
}
