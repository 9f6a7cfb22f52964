//! Checkers: each decides one guarantee over a recorded history.
//!
//! Owns the verdicts. Must not: run clusters or record histories; checkers are pure functions of
//! a recorded history (and, for linearizability, a [`crate::model::Model`]), so they can be rerun
//! offline on any saved run.
//!
//! [`linearizable`] checks per-key histories against a sequential model; [`elle`] checks
//! list-append transaction histories for strict serializability (jepsen.md §4); [`watch`] the
//! watch guarantees of jepsen.md §2.5; [`lease`] the `lease` workload's leases and locks. The
//! revision checker of §3.4 is still to come.

pub mod elle;
pub mod lease;
pub mod linearizable;
pub mod watch;
