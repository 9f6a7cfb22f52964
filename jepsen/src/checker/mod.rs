//! Checkers: each decides one guarantee over a recorded history.
//!
//! Owns the verdicts. Must not: run clusters or record histories; checkers are pure functions of
//! a recorded history (and, for linearizability, a [`crate::model::Model`]), so they can be rerun
//! offline on any saved run.
//!
//! [`linearizable`] checks per-key histories against a sequential model; [`elle`] checks
//! list-append transaction histories for strict serializability (jepsen.md §4). The revision and
//! watch checkers of jepsen.md §3.4 and §2.5 come with their workloads.

pub mod elle;
pub mod linearizable;
