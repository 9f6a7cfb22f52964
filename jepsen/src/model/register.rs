//! One integer register with read, write and compare-and-set; it starts absent.
//!
//! Owns the register vocabulary ([`RegisterInput`], [`RegisterOutput`]) that the Jepsen etcd log
//! parser produces, and its sequential specification [`RegisterModel`].
//! Must not: model revisions or versions; that is [`super::etcd`]'s job.

use serde::{Deserialize, Serialize};

use super::{FunctionName, Model};
use crate::history::Outcome;

/// A register value.
pub type RegisterValue = i64;

/// A request to the register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum RegisterInput {
    /// Read the current value.
    Read,
    /// Set the value.
    Write {
        /// The new value.
        value: RegisterValue,
    },
    /// Set the value to `new` if it is currently `expected`.
    Cas {
        /// The value compared against.
        expected: RegisterValue,
        /// The value set on success.
        new: RegisterValue,
    },
}

/// A response from the register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum RegisterOutput {
    /// The value read; `None` when the register is absent.
    Read {
        /// The value.
        value: Option<RegisterValue>,
    },
    /// The write happened.
    Write,
    /// Whether the compare held (and the set happened).
    Cas {
        /// `true` if the value was `expected`.
        succeeded: bool,
    },
}

impl FunctionName for RegisterInput {
    fn function_name(&self) -> &'static str {
        match self {
            RegisterInput::Read => "read",
            RegisterInput::Write { .. } => "write",
            RegisterInput::Cas { .. } => "cas",
        }
    }
}

impl FunctionName for RegisterOutput {
    fn function_name(&self) -> &'static str {
        match self {
            RegisterOutput::Read { .. } => "read",
            RegisterOutput::Write => "write",
            RegisterOutput::Cas { .. } => "cas",
        }
    }
}

/// The register's specification. The state is the value, `None` while absent.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisterModel;

impl Model for RegisterModel {
    type State = Option<RegisterValue>;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Self::State {
        None
    }

    fn step(
        &self,
        state: &Self::State,
        input: &RegisterInput,
        output: &Outcome<RegisterOutput>,
    ) -> Option<Self::State> {
        use Outcome::{Returned, Unknown};
        match (input, output) {
            (RegisterInput::Read, Returned(RegisterOutput::Read { value })) => {
                (value == state).then_some(*state)
            }
            (RegisterInput::Read, Unknown) => Some(*state),
            (RegisterInput::Write { value }, Returned(RegisterOutput::Write) | Unknown) => {
                Some(Some(*value))
            }
            (RegisterInput::Cas { expected, new }, Returned(RegisterOutput::Cas { succeeded })) => {
                let holds = *state == Some(*expected);
                match (holds, *succeeded) {
                    (true, true) => Some(Some(*new)),
                    (false, false) => Some(*state),
                    _ => None,
                }
            }
            // Unknown: the compare decided the effect, whatever the client was told.
            (RegisterInput::Cas { expected, new }, Unknown) => Some(if *state == Some(*expected) {
                Some(*new)
            } else {
                *state
            }),
            // A response to a different function: the parsers never build one.
            (_, Returned(_)) => None,
        }
    }

    fn is_read_only(&self, input: &RegisterInput) -> bool {
        matches!(input, RegisterInput::Read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Ok(state)` for a legal step, `Err(())` for an illegal one: clearer than `Option<Option<_>>`.
    fn step(
        state: Option<i64>,
        input: &RegisterInput,
        output: &Outcome<RegisterOutput>,
    ) -> Result<Option<i64>, ()> {
        RegisterModel.step(&state, input, output).ok_or(())
    }

    fn returned(output: RegisterOutput) -> Outcome<RegisterOutput> {
        Outcome::Returned(output)
    }

    #[test]
    fn starts_absent_and_reads_must_match() {
        assert_eq!(RegisterModel.init(), None);
        let read = &RegisterInput::Read;
        let read_absent = &returned(RegisterOutput::Read { value: None });
        assert_eq!(step(None, read, read_absent), Ok(None));
        assert_eq!(step(Some(1), read, read_absent), Err(()));
        let read_one = &returned(RegisterOutput::Read { value: Some(1) });
        assert_eq!(step(Some(1), read, read_one), Ok(Some(1)));
    }

    #[test]
    fn write_sets_the_value_even_when_unknown() {
        let write = &RegisterInput::Write { value: 3 };
        assert_eq!(
            step(None, write, &returned(RegisterOutput::Write)),
            Ok(Some(3))
        );
        assert_eq!(step(Some(1), write, &Outcome::Unknown), Ok(Some(3)));
    }

    #[test]
    fn cas_result_must_agree_with_the_compare() {
        let cas = &RegisterInput::Cas {
            expected: 1,
            new: 2,
        };
        let yes = &returned(RegisterOutput::Cas { succeeded: true });
        let no = &returned(RegisterOutput::Cas { succeeded: false });
        assert_eq!(step(Some(1), cas, yes), Ok(Some(2)));
        assert_eq!(step(Some(0), cas, yes), Err(()));
        assert_eq!(step(None, cas, no), Ok(None));
        assert_eq!(step(Some(1), cas, no), Err(()));
        assert_eq!(step(Some(1), cas, &Outcome::Unknown), Ok(Some(2)));
        assert_eq!(step(Some(4), cas, &Outcome::Unknown), Ok(Some(4)));
    }

    #[test]
    fn response_to_another_function_is_illegal() {
        let write_ok = &returned(RegisterOutput::Write);
        assert_eq!(step(None, &RegisterInput::Read, write_ok), Err(()));
    }
}
