//! The history of one key: which revisions hold its versions, split into generations.
//!
//! Owns: [`KeyIndex`], the in-memory index entry of one key, and its compaction rule.
//! Must not: read or write the backend, or know values; rows are found by revision.
//!
//! A *generation* is one life of the key: it starts with the put that creates the key
//! (version 1) and ends with the tombstone that deletes it. Only the last generation may be
//! open (no tombstone yet). Every generation holds at least one put.
//!
//! Worked example (revisions written `main.sub`; asserted by the test
//! `worked_example_from_the_module_docs`):
//!
//! ```text
//! operation        generations afterwards
//! put 2.0          g0 {created 2, version 1, puts [2.0]}
//! put 4.0          g0 {created 2, version 2, puts [2.0, 4.0]}
//! tombstone 6.0    g0 {created 2, version 2, puts [2.0, 4.0], tombstone 6.0}
//! put 8.0          g0 {.. as before ..}  g1 {created 8, version 1, puts [8.0]}
//! put 9.1          g0 {.. as before ..}  g1 {created 8, version 2, puts [8.0, 9.1]}
//!
//! visible_at(1) = none              (not created yet)
//! visible_at(3) = 2.0, version 1    (created 2)
//! visible_at(5) = 4.0, version 2
//! visible_at(6) = visible_at(7) = none  (deleted at 6)
//! visible_at(8) = 8.0, version 1    (created 8: a new generation restarts the version)
//! visible_at(9) = 9.1, version 2
//!
//! compact 5   g0 is deleted after 5, so keep its newest put at or below 5 (4.0):
//!             removes put 2.0      -> g0 {created 2, version 2, puts [4.0], tombstone 6.0}
//! compact 7   g0 ended at 6 < 7, nothing of it is readable at 7 or later:
//!             removes put 4.0 and tombstone 6.0  -> only g1 is left
//! compact 9   keep g1's newest put at or below 9 (9.1):
//!             removes put 8.0      -> g1 {created 8, version 2, puts [9.1]}
//!                                     visible_at(9) is still 9.1, version 2, created 8
//! tombstone 10.0, then compact 10: g1 ended exactly at the compact revision, which stays
//!             readable (history from 10 still shows the delete): removes nothing
//! compact 11  g1 ended at 10 < 11:
//!             removes put 9.1 and tombstone 10.0 -> no generation: the key leaves the index
//! ```
//!
//! `version` is the version of a generation's newest put. It still counts puts removed by
//! compaction, which is why it is stored rather than derived from the length of `puts`.

use crate::types::Revision;

use super::revision::{RevisionPair, RowKey};

/// The version of a key visible at some revision, as far as the index knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VisibleVersion {
    /// Where the row of this version is (its `mod_revision` is `revision.main`).
    pub revision: RevisionPair,
    /// The key's `create_revision`.
    pub create_revision: Revision,
    /// The key's `version`.
    pub version: i64,
}

/// One life of a key, from creation to deletion; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Generation {
    /// Main revision of the creating put (that put's row may be compacted away).
    create_revision: Revision,
    /// Version of the newest put of the generation.
    version: i64,
    /// Puts whose rows are still in history, ascending; never empty.
    puts: Vec<RevisionPair>,
    /// The deletion that ended the generation.
    tombstone: Option<RevisionPair>,
}

impl Generation {
    fn visible_at(&self, main: Revision) -> Option<VisibleVersion> {
        let visible_count = self.puts.partition_point(|put| put.main <= main);
        let newest = visible_count.checked_sub(1)?;
        // An in-memory count always fits in i64.
        let newer_puts = i64::try_from(self.puts.len() - visible_count).unwrap_or(i64::MAX);
        Some(VisibleVersion {
            revision: self.puts[newest],
            create_revision: self.create_revision,
            version: self.version - newer_puts,
        })
    }
}

/// The generations of one key, oldest first; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyIndex {
    generations: Vec<Generation>,
}

impl KeyIndex {
    /// True when the key has no history left (only after compaction).
    pub fn is_empty(&self) -> bool {
        self.generations.is_empty()
    }

    /// Records a put at `revision` and returns the version it creates.
    ///
    /// # Panics
    /// When `revision` is not above every revision already recorded.
    pub fn put(&mut self, revision: RevisionPair) -> VisibleVersion {
        self.assert_after_last(revision);
        match self.generations.last_mut() {
            Some(open) if open.tombstone.is_none() => {
                open.version += 1;
                open.puts.push(revision);
                VisibleVersion {
                    revision,
                    create_revision: open.create_revision,
                    version: open.version,
                }
            }
            _ => {
                self.generations.push(Generation {
                    create_revision: revision.main,
                    version: 1,
                    puts: vec![revision],
                    tombstone: None,
                });
                VisibleVersion {
                    revision,
                    create_revision: revision.main,
                    version: 1,
                }
            }
        }
    }

    /// Records the deletion of the key at `revision`.
    ///
    /// # Panics
    /// When the key is not live, or `revision` is not above every recorded revision.
    pub fn tombstone(&mut self, revision: RevisionPair) {
        self.assert_after_last(revision);
        let open = self
            .generations
            .last_mut()
            .filter(|last| last.tombstone.is_none());
        let open = open.unwrap_or_else(|| panic!("tombstone at {revision:?} of a deleted key"));
        open.tombstone = Some(revision);
    }

    /// Rebuilds a put from a stored row whose key-value says `create_revision` and `version`.
    /// Rows must be replayed in revision order.
    ///
    /// # Errors
    /// A description of the inconsistency when the row cannot follow the rows replayed so far.
    pub fn restore_put(
        &mut self,
        revision: RevisionPair,
        create_revision: Revision,
        version: i64,
    ) -> Result<(), String> {
        self.check_after_last(revision)?;
        if version < 1 || create_revision < 1 || create_revision > revision.main {
            return Err(format!(
                "put at {revision:?} has version {version} and create revision {create_revision}"
            ));
        }
        match self.generations.last_mut() {
            Some(open) if open.tombstone.is_none() => {
                if open.create_revision != create_revision || version <= open.version {
                    return Err(format!(
                        "put at {revision:?} (created {create_revision}, version {version}) \
                         does not continue generation created {} at version {}",
                        open.create_revision, open.version
                    ));
                }
                open.version = version;
                open.puts.push(revision);
            }
            _ => self.generations.push(Generation {
                create_revision,
                version,
                puts: vec![revision],
                tombstone: None,
            }),
        }
        Ok(())
    }

    /// Rebuilds a deletion from a stored tombstone row.
    ///
    /// # Errors
    /// A description of the inconsistency when no live generation precedes the tombstone.
    pub fn restore_tombstone(&mut self, revision: RevisionPair) -> Result<(), String> {
        self.check_after_last(revision)?;
        match self.generations.last_mut() {
            Some(open) if open.tombstone.is_none() => {
                open.tombstone = Some(revision);
                Ok(())
            }
            _ => Err(format!(
                "tombstone at {revision:?} without a live generation"
            )),
        }
    }

    /// The version visible at main revision `main`, or `None` when the key did not exist then.
    /// `main` must not be below the compact revision, whose history is gone.
    pub fn visible_at(&self, main: Revision) -> Option<VisibleVersion> {
        for generation in self.generations.iter().rev() {
            let Some(first) = generation.puts.first() else {
                unreachable!("a generation always holds a put")
            };
            if first.main > main {
                continue;
            }
            if generation
                .tombstone
                .is_some_and(|tombstone| tombstone.main <= main)
            {
                return None;
            }
            return generation.visible_at(main);
        }
        None
    }

    /// Drops what is unreadable at revision `at` and later: in each generation, the puts
    /// older than the newest put at or below `at`, and whole generations deleted at or below
    /// `at`. The rows to delete from history are appended to `removed`.
    pub fn compact(&mut self, at: Revision, removed: &mut Vec<RowKey>) {
        self.generations.retain_mut(|generation| {
            // A generation deleted exactly at `at` stays (its last put and the tombstone):
            // the compact revision itself remains readable, and a watcher starting there
            // must still see that delete. The next compaction removes it.
            if let Some(tombstone) = generation.tombstone.filter(|tombstone| tombstone.main < at) {
                removed.extend(generation.puts.iter().map(|put| RowKey::put(*put)));
                removed.push(RowKey::tombstone(tombstone));
                return false;
            }
            let visible_count = generation.puts.partition_point(|put| put.main <= at);
            if visible_count > 1 {
                removed.extend(generation.puts.drain(..visible_count - 1).map(RowKey::put));
            }
            true
        });
    }

    fn last_revision(&self) -> Option<RevisionPair> {
        let last = self.generations.last()?;
        last.tombstone.or_else(|| last.puts.last().copied())
    }

    fn assert_after_last(&self, revision: RevisionPair) {
        if let Err(message) = self.check_after_last(revision) {
            panic!("{message}");
        }
    }

    fn check_after_last(&self, revision: RevisionPair) -> Result<(), String> {
        match self.last_revision() {
            Some(last) if last >= revision => Err(format!(
                "revision {revision:?} is not after the last one {last:?}"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: Revision, sub: i64) -> RevisionPair {
        RevisionPair::new(main, sub)
    }

    fn generation(
        create_revision: Revision,
        version: i64,
        puts: &[RevisionPair],
        tombstone: Option<RevisionPair>,
    ) -> Generation {
        Generation {
            create_revision,
            version,
            puts: puts.to_vec(),
            tombstone,
        }
    }

    fn seen(main: Revision, sub: i64, create_revision: Revision, version: i64) -> VisibleVersion {
        VisibleVersion {
            revision: rev(main, sub),
            create_revision,
            version,
        }
    }

    #[test]
    fn worked_example_from_the_module_docs() {
        let mut index = KeyIndex::default();
        assert_eq!(index.put(rev(2, 0)), seen(2, 0, 2, 1));
        assert_eq!(index.put(rev(4, 0)), seen(4, 0, 2, 2));
        index.tombstone(rev(6, 0));
        assert_eq!(index.put(rev(8, 0)), seen(8, 0, 8, 1));
        assert_eq!(index.put(rev(9, 1)), seen(9, 1, 8, 2));
        let g0 = generation(2, 2, &[rev(2, 0), rev(4, 0)], Some(rev(6, 0)));
        assert_eq!(
            index.generations,
            vec![g0, generation(8, 2, &[rev(8, 0), rev(9, 1)], None)]
        );

        assert_eq!(index.visible_at(1), None);
        assert_eq!(index.visible_at(3), Some(seen(2, 0, 2, 1)));
        assert_eq!(index.visible_at(5), Some(seen(4, 0, 2, 2)));
        assert_eq!(index.visible_at(6), None);
        assert_eq!(index.visible_at(7), None);
        assert_eq!(index.visible_at(8), Some(seen(8, 0, 8, 1)));
        assert_eq!(index.visible_at(9), Some(seen(9, 1, 8, 2)));
        assert_eq!(index.visible_at(Revision::MAX), Some(seen(9, 1, 8, 2)));

        let mut removed = Vec::new();
        index.compact(5, &mut removed);
        assert_eq!(removed, vec![RowKey::put(rev(2, 0))]);
        assert_eq!(
            index.generations[0],
            generation(2, 2, &[rev(4, 0)], Some(rev(6, 0)))
        );
        assert_eq!(index.visible_at(5), Some(seen(4, 0, 2, 2)));

        removed.clear();
        index.compact(7, &mut removed);
        assert_eq!(
            removed,
            vec![RowKey::put(rev(4, 0)), RowKey::tombstone(rev(6, 0))]
        );
        assert_eq!(
            index.generations,
            vec![generation(8, 2, &[rev(8, 0), rev(9, 1)], None)]
        );

        removed.clear();
        index.compact(9, &mut removed);
        assert_eq!(removed, vec![RowKey::put(rev(8, 0))]);
        assert_eq!(
            index.generations,
            vec![generation(8, 2, &[rev(9, 1)], None)]
        );
        assert_eq!(index.visible_at(9), Some(seen(9, 1, 8, 2)));

        removed.clear();
        index.tombstone(rev(10, 0));
        index.compact(10, &mut removed);
        assert_eq!(removed, vec![]);
        assert_eq!(
            index.generations,
            vec![generation(8, 2, &[rev(9, 1)], Some(rev(10, 0)))]
        );
        index.compact(11, &mut removed);
        assert_eq!(
            removed,
            vec![RowKey::put(rev(9, 1)), RowKey::tombstone(rev(10, 0))]
        );
        assert!(index.is_empty());
    }

    #[test]
    fn put_and_delete_in_one_revision_use_sub_revisions() {
        let mut index = KeyIndex::default();
        index.put(rev(3, 0));
        index.tombstone(rev(3, 1));
        assert_eq!(index.put(rev(3, 2)), seen(3, 2, 3, 1));
        assert_eq!(index.visible_at(2), None);
        assert_eq!(index.visible_at(3), Some(seen(3, 2, 3, 1)));
    }

    #[test]
    fn restore_rebuilds_the_compacted_index() {
        let mut live = KeyIndex::default();
        for main in [2, 3, 5] {
            live.put(rev(main, 0));
        }
        live.tombstone(rev(7, 0));
        live.put(rev(8, 0));
        let mut removed = Vec::new();
        live.compact(4, &mut removed);

        // What survives on disk after compaction at 4: put 3 (v2), put 5 (v3), tombstone 7,
        // put 8 (a new generation).
        let mut restored = KeyIndex::default();
        restored.restore_put(rev(3, 0), 2, 2).unwrap();
        restored.restore_put(rev(5, 0), 2, 3).unwrap();
        restored.restore_tombstone(rev(7, 0)).unwrap();
        restored.restore_put(rev(8, 0), 8, 1).unwrap();
        assert_eq!(restored, live);
    }

    #[test]
    fn restore_rejects_inconsistent_rows() {
        let mut index = KeyIndex::default();
        assert!(index.restore_tombstone(rev(2, 0)).is_err());
        index.restore_put(rev(2, 0), 2, 1).unwrap();
        assert!(
            index.restore_put(rev(2, 0), 2, 2).is_err(),
            "not after the last revision"
        );
        assert!(
            index.restore_put(rev(3, 0), 1, 2).is_err(),
            "other create revision"
        );
        assert!(
            index.restore_put(rev(3, 0), 2, 1).is_err(),
            "version does not grow"
        );
        assert!(
            index.restore_put(rev(3, 0), 4, 1).is_err(),
            "created in the future"
        );
    }

    #[test]
    #[should_panic(expected = "not after the last one")]
    fn put_panics_on_a_non_increasing_revision() {
        let mut index = KeyIndex::default();
        index.put(rev(5, 0));
        index.put(rev(4, 0));
    }

    #[test]
    #[should_panic(expected = "of a deleted key")]
    fn tombstone_panics_on_a_deleted_key() {
        let mut index = KeyIndex::default();
        index.put(rev(5, 0));
        index.tombstone(rev(6, 0));
        index.tombstone(rev(7, 0));
    }
}
