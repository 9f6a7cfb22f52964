//! Workloads: what the clients ask of the cluster, and in what mix.
//!
//! Owns the operation generators. A generator is a pure function of its seed: it decides the
//! sequence of operations (function, key, values), never when they run or against which node.
//!
//! Must not: talk to the cluster or record anything; the runner ([`crate::run`]) sends what a
//! generator yields through [`crate::client`] and records it.

pub mod register;
