//! Label and field selectors of list and watch requests (`?labelSelector=`, `?fieldSelector=`).
//!
//! Owns: both selector grammars, their matching, their error texts, and which fields each
//! served kind can be selected on, with how each field's value is read from a stored object.
//! Must not: do I/O or know about requests; the caller turns a [`SelectorError`] into a 400.
//!
//! kube-compat: label selectors follow `k8s.io/apimachinery` `pkg/labels/selector.go`
//! (v0.32): requirements are ANDed by `,`, keys and values are validated as label keys and
//! values, `in ()` means the single empty value, and requirements are kept sorted by key.
//! Field selectors follow `pkg/fields/selector.go`: `=`, `==` and `!=` only, `\` escapes `\`,
//! `,` and `=` in values, and a field an object lacks reads as the empty string.
//! The per-kind fields are those of kube's field-label conversion functions
//! (`pkg/apis/core/v1/conversion.go`).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::validate::{label_key_errors, label_value_errors};

/// Why a selector string was refused; `Display` is kube-apiserver's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// A label requirement that does not parse or validate.
    #[error("unable to parse requirement: {0}")]
    Requirement(String),
    /// A label selector whose requirements are not separated as the grammar wants.
    #[error("{0}")]
    Syntax(String),
    /// A field selector term without an operator.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldTerm {
        /// The whole selector.
        selector: String,
        /// The term without an operator.
        term: String,
    },
    /// A field selector value with a `\` escape other than `\\`, `\,` and `\=`.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// A field selector value with an unescaped `,` or `=` (Go prints the code point).
    #[error("invalid field selector: unescaped character in value: {}", u32::from(*.0))]
    UnescapedCharacter(char),
    /// A field the kind cannot be selected on (see [`supported_fields`]).
    #[error("field label not supported: {0}")]
    FieldNotSupported(String),
}

// ---------------------------------------------------------------------------------------------
// Label selectors.

/// The operator of a label requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelOperator {
    /// `k=v`
    Equals,
    /// `k==v`
    DoubleEquals,
    /// `k!=v`: true when the label is absent too.
    NotEquals,
    /// `k in (a,b)`
    In,
    /// `k notin (a,b)`: true when the label is absent too.
    NotIn,
    /// `k`
    Exists,
    /// `!k`
    DoesNotExist,
    /// `k>n`, integers only.
    GreaterThan,
    /// `k<n`, integers only.
    LessThan,
}

/// One requirement of a label selector. Values are sorted and distinct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// How the label's value is tested.
    pub operator: LabelOperator,
    /// The values the operator compares with (empty for `Exists`/`DoesNotExist`).
    pub values: Vec<String>,
}

impl LabelRequirement {
    /// Whether a set of labels satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            LabelOperator::Equals | LabelOperator::DoubleEquals | LabelOperator::In => {
                value.is_some_and(|value| self.values.contains(value))
            }
            LabelOperator::NotEquals | LabelOperator::NotIn => {
                value.is_none_or(|value| !self.values.contains(value))
            }
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
            LabelOperator::GreaterThan | LabelOperator::LessThan => {
                let Some(actual) = value.and_then(|value| value.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(bound) = self
                    .values
                    .first()
                    .and_then(|value| value.parse::<i64>().ok())
                else {
                    return false;
                };
                if self.operator == LabelOperator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for LabelRequirement {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.values.join(",");
        match self.operator {
            LabelOperator::Equals => write!(formatter, "{}={values}", self.key),
            LabelOperator::DoubleEquals => write!(formatter, "{}=={values}", self.key),
            LabelOperator::NotEquals => write!(formatter, "{}!={values}", self.key),
            LabelOperator::In => write!(formatter, "{} in ({values})", self.key),
            LabelOperator::NotIn => write!(formatter, "{} notin ({values})", self.key),
            LabelOperator::Exists => write!(formatter, "{}", self.key),
            LabelOperator::DoesNotExist => write!(formatter, "!{}", self.key),
            LabelOperator::GreaterThan => write!(formatter, "{}>{values}", self.key),
            LabelOperator::LessThan => write!(formatter, "{}<{values}", self.key),
        }
    }
}

/// A parsed label selector: the AND of its requirements, sorted by key. The empty selector
/// matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Parses a label selector (`a=b,c in (x,y),!d`).
    ///
    /// # Errors
    /// A [`SelectorError`] with kube's message when the string does not parse or a key or value
    /// is not a valid label key or value.
    pub fn parse(selector: &str) -> Result<LabelSelector, SelectorError> {
        let tokens = lex(selector);
        let mut parser = Parser {
            tokens: &tokens,
            position: 0,
        };
        let mut requirements = parser.parse()?;
        requirements.sort_by(|left, right| left.key.cmp(&right.key));
        Ok(LabelSelector { requirements })
    }

    /// Whether a set of labels satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|requirement| requirement.matches(labels))
    }

    /// Whether the selector has no requirement (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[LabelRequirement] {
        &self.requirements
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, requirement) in self.requirements.iter().enumerate() {
            if index > 0 {
                formatter.write_str(",")?;
            }
            write!(formatter, "{requirement}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    EndOfString,
    Identifier(String),
    /// A run of symbols that is no operator (kube's `ErrorToken`).
    Error(String),
    ClosedParenthesis,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenParenthesis,
}

impl Token {
    /// The text kube quotes in its messages.
    fn literal(&self) -> &str {
        match self {
            Token::EndOfString => "",
            Token::Identifier(text) | Token::Error(text) => text,
            Token::ClosedParenthesis => ")",
            Token::Comma => ",",
            Token::DoesNotExist => "!",
            Token::DoubleEquals => "==",
            Token::Equals => "=",
            Token::GreaterThan => ">",
            Token::In => "in",
            Token::LessThan => "<",
            Token::NotEquals => "!=",
            Token::NotIn => "notin",
            Token::OpenParenthesis => "(",
        }
    }

    /// In value position `in` and `notin` are plain identifiers (`a in (in)`).
    fn as_value(&self) -> Token {
        match self {
            Token::In | Token::NotIn => Token::Identifier(self.literal().to_string()),
            other => other.clone(),
        }
    }

    fn is_identifier_or_not(&self) -> bool {
        matches!(self, Token::Identifier(_) | Token::DoesNotExist)
    }
}

fn is_label_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(byte: u8) -> bool {
    matches!(byte, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn symbol_token(symbols: &[u8]) -> Option<Token> {
    Some(match symbols {
        b")" => Token::ClosedParenthesis,
        b"," => Token::Comma,
        b"!" => Token::DoesNotExist,
        b"==" => Token::DoubleEquals,
        b"=" => Token::Equals,
        b">" => Token::GreaterThan,
        b"<" => Token::LessThan,
        b"!=" => Token::NotEquals,
        b"(" => Token::OpenParenthesis,
        _ => return None,
    })
}

/// Splits a label selector into tokens, ending with `EndOfString`. Like kube's lexer it works
/// on bytes and ends at a NUL.
fn lex(selector: &str) -> Vec<Token> {
    let bytes = selector.as_bytes();
    let end = bytes
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(bytes.len());
    let bytes = &bytes[..end];
    let mut tokens = Vec::new();
    let mut position = 0;
    loop {
        while position < bytes.len() && is_label_whitespace(bytes[position]) {
            position += 1;
        }
        if position == bytes.len() {
            tokens.push(Token::EndOfString);
            return tokens;
        }
        if is_special_symbol(bytes[position]) {
            // The longest run of symbols that is an operator ("!=" before "!").
            let start = position;
            let mut last: Option<(Token, usize)> = None;
            while position < bytes.len() && is_special_symbol(bytes[position]) {
                position += 1;
                match symbol_token(&bytes[start..position]) {
                    Some(token) => last = Some((token, position)),
                    None if last.is_some() => break,
                    None => {}
                }
            }
            match last {
                Some((token, token_end)) => {
                    position = token_end;
                    tokens.push(token);
                }
                None => {
                    let run = String::from_utf8_lossy(&bytes[start..position]);
                    tokens.push(Token::Error(format!(
                        "error expected: keyword found '{run}'"
                    )));
                }
            }
        } else {
            let start = position;
            while position < bytes.len()
                && !is_special_symbol(bytes[position])
                && !is_label_whitespace(bytes[position])
            {
                position += 1;
            }
            let word = String::from_utf8_lossy(&bytes[start..position]).into_owned();
            tokens.push(match word.as_str() {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier(word),
            });
        }
    }
}

/// kube's binary operators as its messages list them.
const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

struct Parser<'a> {
    tokens: &'a [Token],
    position: usize,
}

impl Parser<'_> {
    fn lookahead(&self) -> Token {
        self.tokens[self.position.min(self.tokens.len() - 1)].as_value()
    }

    fn consume_raw(&mut self) -> Token {
        let token = self.tokens[self.position.min(self.tokens.len() - 1)].clone();
        if self.position < self.tokens.len() - 1 {
            self.position += 1;
        }
        token
    }

    fn consume(&mut self) -> Token {
        self.consume_raw().as_value()
    }

    fn parse(&mut self) -> Result<Vec<LabelRequirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let token = self.lookahead();
            if token == Token::EndOfString {
                return Ok(requirements);
            }
            if !token.is_identifier_or_not() {
                return Err(SelectorError::Syntax(format!(
                    "found '{}', expected: !, identifier, or 'end of string'",
                    token.literal()
                )));
            }
            let requirement = self
                .parse_requirement()
                .map_err(SelectorError::Requirement)?;
            requirements.push(requirement);
            match self.consume() {
                Token::EndOfString => return Ok(requirements),
                Token::Comma => {
                    let next = self.lookahead();
                    if !next.is_identifier_or_not() {
                        return Err(SelectorError::Syntax(format!(
                            "found '{}', expected: identifier after ','",
                            next.literal()
                        )));
                    }
                }
                other => {
                    return Err(SelectorError::Syntax(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        other.literal()
                    )));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<LabelRequirement, String> {
        let mut token = self.consume();
        let negated = token == Token::DoesNotExist;
        if negated {
            token = self.consume();
        }
        let Token::Identifier(key) = token else {
            return Err(format!("found '{}', expected: identifier", token.literal()));
        };
        let key_errors = label_key_errors(&key);
        if !key_errors.is_empty() {
            return Err(format!(
                "<nil>: Invalid value: {key:?}: {}",
                key_errors.join("; ")
            ));
        }
        let next = self.lookahead();
        if negated || next == Token::EndOfString || next == Token::Comma {
            let operator = if negated {
                LabelOperator::DoesNotExist
            } else {
                LabelOperator::Exists
            };
            return Ok(LabelRequirement {
                key,
                operator,
                values: Vec::new(),
            });
        }
        let operator = match self.consume_raw() {
            Token::In => LabelOperator::In,
            Token::NotIn => LabelOperator::NotIn,
            Token::Equals => LabelOperator::Equals,
            Token::DoubleEquals => LabelOperator::DoubleEquals,
            Token::NotEquals => LabelOperator::NotEquals,
            Token::GreaterThan => LabelOperator::GreaterThan,
            Token::LessThan => LabelOperator::LessThan,
            other => {
                return Err(format!(
                    "found '{}', expected: {BINARY_OPERATORS}",
                    other.literal()
                ));
            }
        };
        let mut values = match operator {
            LabelOperator::In | LabelOperator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        values.sort();
        values.dedup();
        check_requirement(&key, operator, &values)?;
        Ok(LabelRequirement {
            key,
            operator,
            values,
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let token = self.consume();
        if token != Token::OpenParenthesis {
            return Err(format!("found '{}' expected: '('", token.literal()));
        }
        let token = self.lookahead();
        match token {
            Token::Identifier(_) | Token::Comma => {
                let values = self.parse_identifiers()?;
                if self.consume() != Token::ClosedParenthesis {
                    return Err(format!("found '{}', expected: ')'", token.literal()));
                }
                Ok(values)
            }
            Token::ClosedParenthesis => {
                self.consume();
                Ok(vec![String::new()])
            }
            other => Err(format!(
                "found '{}', expected: ',', ')' or identifier",
                other.literal()
            )),
        }
    }

    fn parse_identifiers(&mut self) -> Result<Vec<String>, String> {
        let mut values: Vec<String> = Vec::new();
        loop {
            match self.consume() {
                Token::Identifier(value) => {
                    values.push(value);
                    match self.lookahead() {
                        Token::Comma => {}
                        Token::ClosedParenthesis => return Ok(values),
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or ')'",
                                other.literal()
                            ));
                        }
                    }
                }
                Token::Comma => {
                    // "(,", ",)" and ",," each stand for the empty value.
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.lookahead() {
                        Token::ClosedParenthesis => {
                            values.push(String::new());
                            return Ok(values);
                        }
                        Token::Comma => values.push(String::new()),
                        _ => {}
                    }
                }
                other => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        other.literal()
                    ));
                }
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let token = self.lookahead();
        if token == Token::EndOfString || token == Token::Comma {
            return Ok(vec![String::new()]);
        }
        match self.consume() {
            Token::Identifier(value) => Ok(vec![value]),
            other => Err(format!("found '{}', expected: identifier", other.literal())),
        }
    }
}

/// kube's `NewRequirement` checks on the values of a parsed requirement.
fn check_requirement(key: &str, operator: LabelOperator, values: &[String]) -> Result<(), String> {
    let mut errors: Vec<String> = Vec::new();
    if matches!(
        operator,
        LabelOperator::GreaterThan | LabelOperator::LessThan
    ) {
        for (index, value) in values.iter().enumerate() {
            if value.parse::<i64>().is_err() {
                errors.push(format!(
                    "values[{index}]: Invalid value: {value:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                ));
            }
        }
    }
    for (index, value) in values.iter().enumerate() {
        let value_errors = label_value_errors(value);
        if !value_errors.is_empty() {
            errors.push(format!(
                "values[{index}][{key}]: Invalid value: {value:?}: {}",
                value_errors.join("; ")
            ));
        }
    }
    errors.dedup();
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors.

/// The operator of a field requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldOperator {
    /// `f=v`
    Equals,
    /// `f==v`
    DoubleEquals,
    /// `f!=v`
    NotEquals,
}

/// One term of a field selector, its value unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field, e.g. `spec.nodeName`.
    pub field: String,
    /// How the field's value is tested.
    pub operator: FieldOperator,
    /// The value compared with.
    pub value: String,
}

impl FieldRequirement {
    fn matches(&self, actual: &str) -> bool {
        match self.operator {
            FieldOperator::Equals | FieldOperator::DoubleEquals => actual == self.value,
            FieldOperator::NotEquals => actual != self.value,
        }
    }
}

/// A parsed field selector: the AND of its terms. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses a field selector (`metadata.name=x,status.phase!=Running`).
    ///
    /// # Errors
    /// A [`SelectorError`] with kube's message for a term without an operator or a value with
    /// a bad escape.
    pub fn parse(selector: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = split_terms(selector);
        terms.sort_unstable();
        let mut requirements = Vec::with_capacity(terms.len());
        for term in terms.into_iter().filter(|term| !term.is_empty()) {
            let Some((field, operator, raw_value)) = split_term(term) else {
                return Err(SelectorError::FieldTerm {
                    selector: selector.to_string(),
                    term: term.to_string(),
                });
            };
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value: unescape_value(raw_value)?,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether an object whose field values `value_of` reads satisfies every term; a field it
    /// has no value for reads as the empty string, as upstream.
    pub fn matches(&self, value_of: &dyn Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|requirement| {
            requirement.matches(&value_of(&requirement.field).unwrap_or_default())
        })
    }

    /// The terms, sorted as upstream sorts them.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether the selector has no term.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Checks that every term's field can be selected on for `kind`.
    ///
    /// # Errors
    /// [`SelectorError::FieldNotSupported`] naming the first field that cannot.
    pub fn check_supported(&self, kind: &str) -> Result<(), SelectorError> {
        let supported = supported_fields(kind);
        match self
            .requirements
            .iter()
            .find(|term| !supported.contains(&term.field.as_str()))
        {
            Some(term) => Err(SelectorError::FieldNotSupported(term.field.clone())),
            None => Ok(()),
        }
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, term) in self.requirements.iter().enumerate() {
            if index > 0 {
                formatter.write_str(",")?;
            }
            let operator = match term.operator {
                FieldOperator::Equals => "=",
                FieldOperator::DoubleEquals => "==",
                FieldOperator::NotEquals => "!=",
            };
            write!(
                formatter,
                "{}{operator}{}",
                term.field,
                escape_value(&term.value)
            )?;
        }
        Ok(())
    }
}

/// Escapes `\`, `,` and `=` in a field selector value.
pub fn escape_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        if matches!(character, '\\' | ',' | '=') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// Splits on commas that are not escaped; the escapes stay in the terms.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_escape = false;
    for (index, character) in selector.char_indices() {
        if in_escape {
            in_escape = false;
        } else if character == '\\' {
            in_escape = true;
        } else if character == ',' {
            terms.push(&selector[start..index]);
            start = index + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// The field, operator and raw value of a term, split at the first operator (`!=` and `==`
/// are tried before `=`, so `a==b` is not `a` = `=b`).
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    const OPERATORS: [(&str, FieldOperator); 3] = [
        ("!=", FieldOperator::NotEquals),
        ("==", FieldOperator::DoubleEquals),
        ("=", FieldOperator::Equals),
    ];
    term.char_indices().find_map(|(index, _)| {
        let remaining = &term[index..];
        OPERATORS
            .iter()
            .find(|(text, _)| remaining.starts_with(text))
            .map(|(text, operator)| (&term[..index], *operator, &term[index + text.len()..]))
    })
}

fn unescape_value(raw: &str) -> Result<String, SelectorError> {
    let mut value = String::with_capacity(raw.len());
    let mut in_escape = false;
    for character in raw.chars() {
        if in_escape {
            if !matches!(character, '\\' | ',' | '=') {
                return Err(SelectorError::InvalidEscape(format!("\\{character}")));
            }
            value.push(character);
            in_escape = false;
            continue;
        }
        match character {
            '\\' => in_escape = true,
            ',' | '=' => return Err(SelectorError::UnescapedCharacter(character)),
            other => value.push(other),
        }
    }
    if in_escape {
        return Err(SelectorError::InvalidEscape("\\".to_string()));
    }
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// Selectable fields per kind.

const META_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];
const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
    // Old v1 clients' name for spec.nodeName.
    "spec.host",
];
const NODE_FIELDS: &[&str] = &["metadata.name", "spec.unschedulable"];
const NAMESPACE_FIELDS: &[&str] = &["metadata.name", "status.phase"];
const SECRET_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "type"];
const EVENT_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "source",
    "type",
];

/// The fields objects of `kind` can be selected on. Kinds with no conversion function of their
/// own upstream (Service, ConfigMap, Deployment, ...) take `metadata.name` and
/// `metadata.namespace`; Node and Namespace take no `metadata.namespace`, as upstream.
pub fn supported_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => POD_FIELDS,
        "Node" => NODE_FIELDS,
        "Namespace" => NAMESPACE_FIELDS,
        "Secret" => SECRET_FIELDS,
        "Event" => EVENT_FIELDS,
        _ => META_FIELDS,
    }
}

/// The value of a selectable `field` of `obj`, an object of `kind`, as kube's selectable-field
/// sets hold it: absent strings read as `""`, booleans as `"true"`/`"false"`. `None` when
/// `field` is not selectable for `kind`.
pub fn field_value(kind: &str, obj: &Value, field: &str) -> Option<String> {
    if !supported_fields(kind).contains(&field) {
        return None;
    }
    let string_at = |path: &[&str]| -> String {
        let mut value = obj;
        for step in path {
            match value.get(step) {
                Some(next) => value = next,
                None => return String::new(),
            }
        }
        match value {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    };
    let value = match (kind, field) {
        ("Pod", "spec.host") => string_at(&["spec", "nodeName"]),
        // The first of status.podIPs, which upstream keeps in step with status.podIP.
        ("Pod", "status.podIP") => {
            let first_pod_ip = obj
                .pointer("/status/podIPs/0/ip")
                .and_then(Value::as_str)
                .map(str::to_string);
            first_pod_ip.unwrap_or_else(|| string_at(&["status", "podIP"]))
        }
        ("Node", "spec.unschedulable") => {
            let unschedulable = obj.pointer("/spec/unschedulable").and_then(Value::as_bool);
            unschedulable.unwrap_or(false).to_string()
        }
        ("Event", "source") => string_at(&["source", "component"]),
        _ => string_at(&field.split('.').collect::<Vec<_>>()),
    };
    Some(value)
}

#[cfg(test)]
#[path = "selector_tests.rs"]
mod tests;
