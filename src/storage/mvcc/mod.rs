//! The multi-version key space with etcd v3 semantics: revisions, Range, Put, DeleteRange,
//! Txn, Compact and HashKV.
//!
//! Owns: the revision counter, the in-memory key index, the history rows in the `kv` column
//! family, compaction, and the `mvcc/` keys of the `meta` column family.
//! Must not: read the clock, spawn tasks, `.await`, or import raft/server/pb modules. Leases
//! are consulted only through [`LeaseLookup`]; attaching keys to leases is apply's job,
//! driven by the events of each commit.
//!
//! Layout, one concern per file:
//! * `revision`: (main, sub) revisions and the byte layout of history-row keys;
//! * `codec`: the byte layout of history-row values;
//! * `key_index`: one key's generations (with a worked example) and its compaction rule;
//! * `index`: the index of all keys, and a batch's pending changes layered over it;
//! * `read`: Range and Compare semantics shared by committed and in-batch reads;
//! * `store`: [`MvccStore`], recovery, committed reads, HashKV;
//! * `history`: committed history read back as events, for watchers catching up;
//! * `write`: [`WriteTxn`], request execution, revision assignment and commit.
//!
//! Storage: every change is one history row keyed by its revision (`kv` column family);
//! a put row holds the full key-value, a tombstone row only the key and deletion revision.
//! The key index lives in memory only and is rebuilt from the rows on open, or on a store
//! opened over a replacement database before [`MvccStore::replace`] swaps it in. A write
//! batch becomes one RocksDB write; readers switch to it atomically at commit.
//!
//! Invariants:
//! * `compact_revision <= current_revision`; revisions only grow;
//! * a committed read at revision `r >= compact_revision` sees exactly the changes with
//!   main revision `<= r`;
//! * the index and the rows agree (checked pairwise whenever a row is loaded).

mod codec;
mod error;
mod history;
mod index;
mod key_index;
mod read;
mod revision;
mod store;
mod write;

#[cfg(test)]
pub(crate) mod tests;

pub use error::MvccError;
pub use history::HistoryBatch;
pub use store::{
    COMPACT_REVISION_KEY, Committed, HashKv, LeaseLookup, MvccStore, RESERVED_META_PREFIX,
};
pub use write::WriteTxn;

/// The in-memory key index and the index half of a committed range, re-exported for the
/// micro-benchmarks in `benches/` only: a bench is a separate crate and cannot reach the
/// private modules. Not part of the API; nothing in the crate may use it.
#[doc(hidden)]
pub mod index_for_benches {
    pub use super::index::{Index, PendingIndex, layered_range};
    pub use super::key_index::{KeyIndex, VisibleVersion};
    pub use super::read::{Collected, collect, plan_range};
    pub use super::revision::RevisionPair;
}

#[cfg(test)]
mod index_for_benches_tests {
    use std::path::Path;

    /// Collects the `.rs` files under `dir` that mention `needle`.
    fn files_mentioning(dir: &Path, needle: &str, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                files_mentioning(&path, needle, found);
            } else if path.extension().is_some_and(|ext| ext == "rs")
                && std::fs::read_to_string(&path)
                    .expect("source file")
                    .contains(needle)
            {
                found.push(path.display().to_string());
            }
        }
    }

    /// The benches' door into the index stays theirs: only this file names it in `src/`.
    #[test]
    fn only_the_benches_use_the_index_re_export() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        files_mentioning(&src, "index_for_benches", &mut found);
        let this_file = src.join("storage/mvcc/mod.rs").display().to_string();
        assert_eq!(found, vec![this_file]);
    }
}
