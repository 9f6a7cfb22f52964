//! The network between cluster members, as the harness controls it.
//!
//! Owns the peer network's fault state. Today that is [`proxy`]: a user-space TCP proxy in front
//! of every member's peer port that can cut links both ways (jepsen.md §5 (c)). Network
//! namespaces with nftables (§5 (b)) would be a second implementation here.
//!
//! Must not: touch client traffic (the workload's connections go straight to the members' client
//! ports), signal processes, or reach beyond 127.0.0.1.

pub mod proxy;
