//! Checkers: each decides one guarantee over a recorded history.
//!
//! Owns the verdicts. Must not: run clusters or record histories; checkers are pure functions of
//! a [`crate::history::History`] and a [`crate::model::Model`], so they can be rerun offline on
//! any saved run.
//!
//! Only [`linearizable`] exists so far; the revision, watch and list-append checkers of jepsen.md
//! §3.4, §2.5 and §4 come with their workloads.

pub mod linearizable;
