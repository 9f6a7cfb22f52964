//! Local persistent state of one member: the RocksDB [`backend`], the MVCC key space
//! ([`mvcc`]) built on top of it, and the member's database directories ([`member_db`]:
//! which one is current, and replacing it with a checkpoint from another member).
//!
//! Owns: everything below the apply layer that touches disk for the key space.
//! Must not: know about Raft, gRPC or protobuf types, read the clock or spawn tasks.
//! The Raft log and its WAL are kept elsewhere; the backend here is not synced on every write
//! because the Raft WAL is the durable record and apply is replayed from it after a crash.

pub mod backend;
pub mod member_db;
pub mod mvcc;
