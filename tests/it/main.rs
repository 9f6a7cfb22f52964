//! The integration test binary: every test here drives a real `mnemo` process (or etcdctl
//! against one) from the outside, on loopback ports picked at run time.
//!
//! One binary keeps link time down; each module covers one area:
//! - `apiserver`: `mnemo apiserver` driven by the real kubectl 1.32 (every served kind, errors,
//!   watch, paging, scale, binding, compaction), on the embedded member and on etcd 3.4, and 20
//!   concurrent read-modify-write clients;
//! - `bench`: the `mnemo-bench` load tool, each subcommand with a tiny total, its JSON line
//!   checked and the store read back;
//! - `apiserver_patch`: the API server's PATCH semantics against kubectl 1.32's own patch code
//!   (`kubectl patch --local`), case by case;
//! - `auth`: users, roles, permissions and tokens: etcdctl flows and a permission matrix, both
//!   as etcd 3.4 answers them, token expiry, and a revocation racing writes;
//! - `support`: spawning members, clients, etcdctl and a raw HTTP/1.1 GET; `support::cluster`
//!   builds multi-member clusters behind cuttable peer proxies, with a recording write load;
//! - `grpc_kv`: KV, Maintenance.Status and Cluster.MemberList over gRPC, against etcd's semantics;
//! - `grpc_watch`: the Watch service over gRPC, every watch option against etcd's contract;
//! - `grpc_lease`: the Lease service over gRPC: every RPC and refusal against etcd's contract;
//! - `etcdctl`: etcdctl 3.4's printed output against a member, equal to etcd's up to ids;
//! - `etcdctl_lease`: `etcdctl lease ...` and `put --lease` printing what they print against etcd,
//!   up to random ids and remaining seconds;
//! - `etcdctl_watch`: `etcdctl watch` (plain, prefix, --rev, --prev-kv, interactive) printing
//!   exactly what it prints against etcd;
//! - `lease_expiry`: leases expire one TTL after their last keepalive (timed, with a bound),
//!   and never while kept alive;
//! - `crash`: acknowledged writes survive `kill -9` in the middle of a write load;
//! - `restart`: a large store answers the same ranges after SIGTERM and after `kill -9`;
//! - `http`: `/health` and `/version` on the client port;
//! - `gateway`: the JSON gateway (`/v3/*`) with curl, answer for answer against etcd 3.4's;
//! - `metrics`: `/metrics` under etcd's names, moving under load and across a leader kill;
//!   `--listen-metrics-urls`; JSON logs, the member name, the slow-request warning;
//! - `quota`: the backend quota, the NOSPACE and CORRUPT alarms, and Maintenance.Alarm, on one
//!   member and across a cluster;
//! - `cli`: etcd's flags, `MNEMO_*` environment variables, refusals of bad settings;
//! - `clients`: the in-process and gRPC `KvClient`s agree;
//! - `concurrency`: the Lock and Election services and the client recipes;
//! - `cluster`: multi-member clusters: one leader, reads through every member, failover under
//!   load, catch-up by snapshot, membership changes, move-leader, cut-off and paused members.
//! - `cluster_lease`: leases across a leader kill: kept alive through a follower they survive,
//!   left alone they still expire, within a measured bound;
//! - `cluster_watch`: watchers on followers and across a leader kill, resumed on another member.
//! - `snapshot`: `etcdctl snapshot save` against a loaded cluster, `snapshot status`, and
//!   `snapshot restore` into a new cluster that answers like the original; damaged files refused.
//! - `watch_scale`: 10,000 watchers on a stream, 1,000 streams, and a stream that stops reading.
//! - `tls`: `https://` client and peer URLs: client certificate authentication (etcdctl, curl,
//!   the gRPC client) and a TLS cluster that refuses a peer certificate from another CA.

mod support;

mod apiserver;
mod apiserver_patch;
mod auth;
mod auto_compaction;
mod bench;
mod cli;
mod clients;
mod cluster;
mod cluster_lease;
mod cluster_watch;
mod concurrency;
mod corruption;
mod crash;
mod etcdctl;
mod etcdctl_lease;
mod etcdctl_watch;
mod gateway;
mod grpc_kv;
mod grpc_lease;
mod grpc_watch;
mod http;
mod lease_checkpoint;
mod lease_expiry;
mod metrics;
mod quota;
mod restart;
mod snapshot;
mod tls;
mod watch_scale;
