//! Local persistent state of one member: the RocksDB [`backend`] and the MVCC key space
//! ([`mvcc`]) built on top of it.
//!
//! Owns: everything below the apply layer that touches disk for the key space.
//! Must not: know about Raft, gRPC or protobuf types, read the clock or spawn tasks.
//! The Raft log and its WAL are kept elsewhere; the backend here is not synced on every write
//! because the Raft WAL is the durable record and apply is replayed from it after a crash.

pub mod backend;
pub mod mvcc;
