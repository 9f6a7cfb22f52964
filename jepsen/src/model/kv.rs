//! A map from string keys to string values with get, put and append; absent keys read as "".
//!
//! Owns the kv vocabulary ([`KvInput`], [`KvOutput`]) that porcupine's kv fixtures use, and its
//! specification [`KvModel`], partitioned by key: keys are independent, so the history is
//! linearizable iff each key's sub-history is.
//! Must not: model anything etcd-specific (revisions, versions, deletes).

use serde::{Deserialize, Serialize};

use super::{FunctionName, Model};
use crate::history::Outcome;

/// A request on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvInput {
    /// The key.
    pub key: String,
    /// What to do with it.
    #[serde(flatten)]
    pub op: KvOp,
}

/// What a [`KvInput`] does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum KvOp {
    /// Read the value.
    Get,
    /// Replace the value.
    Put {
        /// The new value.
        value: String,
    },
    /// Append to the value.
    Append {
        /// The suffix.
        value: String,
    },
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum KvOutput {
    /// The value read ("" when absent).
    Get {
        /// The value.
        value: String,
    },
    /// The put happened.
    Put,
    /// The append happened.
    Append,
}

impl FunctionName for KvInput {
    fn function_name(&self) -> &'static str {
        match self.op {
            KvOp::Get => "get",
            KvOp::Put { .. } => "put",
            KvOp::Append { .. } => "append",
        }
    }
}

impl FunctionName for KvOutput {
    fn function_name(&self) -> &'static str {
        match self {
            KvOutput::Get { .. } => "get",
            KvOutput::Put => "put",
            KvOutput::Append => "append",
        }
    }
}

/// The map's specification, per key. The state is one key's value.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

impl Model for KvModel {
    type State = String;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> String {
        String::new()
    }

    fn step(&self, state: &String, input: &KvInput, output: &Outcome<KvOutput>) -> Option<String> {
        use Outcome::{Returned, Unknown};
        match (&input.op, output) {
            (KvOp::Get, Returned(KvOutput::Get { value })) => {
                (value == state).then(|| state.clone())
            }
            (KvOp::Get, Unknown) => Some(state.clone()),
            (KvOp::Put { value }, Returned(KvOutput::Put) | Unknown) => Some(value.clone()),
            (KvOp::Append { value }, Returned(KvOutput::Append) | Unknown) => {
                Some(format!("{state}{value}"))
            }
            // A response to a different function: the parsers never build one.
            (_, Returned(_)) => None,
        }
    }

    fn partition_key(&self, input: &KvInput) -> Option<String> {
        Some(input.key.clone())
    }

    fn is_read_only(&self, input: &KvInput) -> bool {
        matches!(input.op, KvOp::Get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(op: KvOp) -> KvInput {
        KvInput {
            key: "k".to_owned(),
            op,
        }
    }

    #[test]
    fn get_put_append_on_one_key() {
        let model = KvModel;
        let empty = model.init();
        let got = |value: &str| {
            Outcome::Returned(KvOutput::Get {
                value: value.to_owned(),
            })
        };
        assert_eq!(
            model.step(&empty, &input(KvOp::Get), &got("")),
            Some(String::new())
        );
        assert_eq!(model.step(&empty, &input(KvOp::Get), &got("x")), None);
        let put = input(KvOp::Put {
            value: "a".to_owned(),
        });
        let after_put = model
            .step(&empty, &put, &Outcome::Returned(KvOutput::Put))
            .unwrap();
        let append = input(KvOp::Append {
            value: "b".to_owned(),
        });
        let after_append = model.step(&after_put, &append, &Outcome::Unknown).unwrap();
        assert_eq!(after_append, "ab");
        assert_eq!(
            model.step(&after_append, &input(KvOp::Get), &got("ab")),
            Some("ab".into())
        );
    }

    #[test]
    fn partitions_by_key_and_only_get_is_read_only() {
        let model = KvModel;
        assert_eq!(model.partition_key(&input(KvOp::Get)).as_deref(), Some("k"));
        assert!(model.is_read_only(&input(KvOp::Get)));
        assert!(!model.is_read_only(&input(KvOp::Append {
            value: String::new()
        })));
    }

    #[test]
    fn jsonl_shape_is_flat() {
        let put = input(KvOp::Put {
            value: "v".to_owned(),
        });
        let json = serde_json::to_string(&put).unwrap();
        assert_eq!(json, r#"{"key":"k","f":"put","value":"v"}"#);
        assert_eq!(serde_json::from_str::<KvInput>(&json).unwrap(), put);
    }
}
