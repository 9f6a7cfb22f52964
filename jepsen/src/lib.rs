//! mnemo-jepsen: black-box testing of mnemo in the style of Jepsen.
//!
//! Owns everything under `jepsen/`. The offline half: recorded histories and their file formats
//! ([`history`]), sequential specifications ([`model`]) and the linearizability checker
//! ([`checker::linearizable`]). The online half: a cluster of real `mnemo` processes
//! ([`cluster`]) behind peer proxies that can partition it ([`net::proxy`]), a client that never
//! retries and classifies every outcome ([`client`]), seeded workloads ([`workload`]), faults
//! ([`nemesis`]), and the run that ties them together and records [`history::jsonl`] through
//! [`history::recorder`] ([`run`]), and the pages a person reads afterwards ([`report`]).
//!
//! Must not: depend on the `mnemo` crate's internals. The harness treats mnemo as a black box
//! reached over its etcd-compatible API, and the checkers only read histories, so they can judge
//! any etcd-like store.
//!
//! Dependency order, lowest first: `history` (core types) ← `model` ← `history::{jepsen_etcd,
//! edn_kv, jsonl, recorder}` (parsers into the models' vocabularies) and `checker`. Online:
//! `random`, `pb`, `net` ← `cluster`, `client`, `workload` ← `nemesis` ← `run`; `report` reads
//! the `run::TestReport` that `run` hands it, and nothing of the live harness.
//!
//! ```
//! use mnemo_jepsen::checker::linearizable::{check, CheckOptions, Verdict};
//! use mnemo_jepsen::history::jepsen_etcd;
//! use mnemo_jepsen::model::register::RegisterModel;
//!
//! // A write of 1 that completed, then a read that still saw the register absent.
//! let log = "INFO  jepsen.util - 0\t:invoke\t:write\t1\n\
//!            INFO  jepsen.util - 0\t:ok\t:write\t1\n\
//!            INFO  jepsen.util - 1\t:invoke\t:read\tnil\n\
//!            INFO  jepsen.util - 1\t:ok\t:read\tnil\n";
//! let history = jepsen_etcd::parse(log.as_bytes()).unwrap();
//! let verdict = check(&RegisterModel, &history, &CheckOptions::default());
//! assert!(matches!(verdict, Verdict::NotLinearizable { .. }));
//! ```

pub mod bugs;
pub mod checker;
pub mod client;
pub mod cluster;
pub mod history;
pub mod model;
pub mod nemesis;
pub mod net;
pub mod pb;
pub mod random;
pub mod report;
pub mod run;
pub mod workload;
