//! The in-memory key index, and the overlay in which a write batch keeps its uncommitted
//! changes to it.
//!
//! Owns: [`Index`] (key → [`KeyIndex`]), [`PendingIndex`] (key → changes made by the open
//! batch) and the merged, key-ordered walk over both.
//! Must not: touch the backend or decide MVCC semantics beyond "which version is visible".
//!
//! Why an overlay instead of editing a copy of the index: a batch may touch a key with a
//! long history, and readers must keep seeing the committed index untouched until commit.
//! The overlay only records what the batch appended, with the version each change produced,
//! so nothing of the committed history is copied. All pending changes have main revisions
//! above every committed revision, which makes combining the two a simple "newest wins".

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;

use bytes::Bytes;

use crate::types::{KeyRange, Revision};

use super::key_index::{KeyIndex, VisibleVersion};
use super::revision::{RevisionPair, RowKind};

/// Every key with history, in key order.
pub type Index = BTreeMap<Bytes, KeyIndex>;

/// The uncommitted changes of one write batch, per key.
pub type PendingIndex = BTreeMap<Bytes, PendingKey>;

/// The uncommitted changes of one write batch to one key, in revision order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PendingKey {
    /// The changes, oldest first.
    pub changes: Vec<PendingChange>,
}

/// One uncommitted put or deletion of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingChange {
    /// Where the change sits in history.
    pub revision: RevisionPair,
    /// Put or tombstone.
    pub kind: RowKind,
    /// The version visible right after the change (`None` after a tombstone).
    pub after: Option<VisibleVersion>,
}

/// The version of a key visible at main revision `at`, from its committed index entry and
/// the open batch's changes.
pub fn visible(
    committed: Option<&KeyIndex>,
    pending: Option<&PendingKey>,
    at: Revision,
) -> Option<VisibleVersion> {
    let newest_pending = pending.and_then(|pending| {
        pending
            .changes
            .iter()
            .rev()
            .find(|change| change.revision.main <= at)
    });
    match newest_pending {
        // Pending changes are newer than anything committed, so the newest one at or below
        // `at` decides.
        Some(change) => change.after,
        None => committed.and_then(|key_index| key_index.visible_at(at)),
    }
}

/// Key-ordered walk over the keys of a range that have a committed index entry, pending
/// changes, or both.
pub struct Layered<'a> {
    committed: Peekable<std::collections::btree_map::Range<'a, Bytes, KeyIndex>>,
    pending: Peekable<std::collections::btree_map::Range<'a, Bytes, PendingKey>>,
}

/// One key of a [`Layered`] walk.
pub type LayeredEntry<'a> = (&'a Bytes, Option<&'a KeyIndex>, Option<&'a PendingKey>);

/// Walks the keys of `range` over the committed `index` and the `pending` overlay.
pub fn layered_range<'a>(
    index: &'a Index,
    pending: &'a PendingIndex,
    range: &'a KeyRange,
) -> Layered<'a> {
    let bounds = key_bounds(range);
    Layered {
        committed: index.range::<[u8], _>(bounds).peekable(),
        pending: pending.range::<[u8], _>(bounds).peekable(),
    }
}

impl<'a> Iterator for Layered<'a> {
    type Item = LayeredEntry<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.committed.peek(), self.pending.peek()) {
            (None, None) => return None,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((committed_key, _)), Some((pending_key, _))) => committed_key.cmp(pending_key),
        };
        match order {
            std::cmp::Ordering::Less => self
                .committed
                .next()
                .map(|(key, committed)| (key, Some(committed), None)),
            std::cmp::Ordering::Greater => self
                .pending
                .next()
                .map(|(key, pending)| (key, None, Some(pending))),
            std::cmp::Ordering::Equal => {
                let (key, committed) = self.committed.next()?;
                let (_, pending) = self.pending.next()?;
                Some((key, Some(committed), Some(pending)))
            }
        }
    }
}

/// The B-tree bounds of a key range. An empty interval (`key >= range_end`) becomes the empty
/// `[key, key)`, since `BTreeMap::range` panics on reversed bounds.
fn key_bounds(range: &KeyRange) -> (Bound<&[u8]>, Bound<&[u8]>) {
    let start = Bound::Included(range.key.as_ref());
    if range.is_single() {
        (start, Bound::Included(range.key.as_ref()))
    } else if range.is_to_end() {
        (start, Bound::Unbounded)
    } else if range.is_empty_interval() {
        (start, Bound::Excluded(range.key.as_ref()))
    } else {
        (start, Bound::Excluded(range.range_end.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(keys: &[&str]) -> Index {
        keys.iter()
            .map(|key| {
                let mut key_index = KeyIndex::default();
                key_index.put(RevisionPair::new(2, 0));
                (Bytes::copy_from_slice(key.as_bytes()), key_index)
            })
            .collect()
    }

    fn pending(keys: &[&str]) -> PendingIndex {
        keys.iter()
            .map(|key| {
                (
                    Bytes::copy_from_slice(key.as_bytes()),
                    PendingKey::default(),
                )
            })
            .collect()
    }

    fn walk(index: &Index, overlay: &PendingIndex, range: &KeyRange) -> Vec<(String, bool, bool)> {
        layered_range(index, overlay, range)
            .map(|(key, committed, pending)| {
                let key = String::from_utf8(key.to_vec()).unwrap();
                (key, committed.is_some(), pending.is_some())
            })
            .collect()
    }

    #[test]
    fn layered_walk_merges_in_key_order() {
        let index = committed(&["a", "c", "d"]);
        let overlay = pending(&["b", "c", "e"]);
        let everything = walk(&index, &overlay, &KeyRange::new("\0", "\0"));
        let expected = [
            ("a", true, false),
            ("b", false, true),
            ("c", true, true),
            ("d", true, false),
            ("e", false, true),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(k, c, p)| (k.to_string(), *c, *p))
            .collect();
        assert_eq!(everything, expected);
        assert_eq!(walk(&index, &overlay, &KeyRange::new("b", "d")).len(), 2);
        assert_eq!(walk(&index, &overlay, &KeyRange::single("c")).len(), 1);
        assert_eq!(walk(&index, &overlay, &KeyRange::single("cc")).len(), 0);
        assert_eq!(walk(&index, &overlay, &KeyRange::new("d", "b")).len(), 0);
        assert_eq!(walk(&index, &overlay, &KeyRange::new("c", "c")).len(), 0);
        assert_eq!(walk(&index, &overlay, &KeyRange::new("c", "\0")).len(), 3);
    }

    #[test]
    fn newest_pending_change_at_or_below_the_revision_wins() {
        let mut key_index = KeyIndex::default();
        let committed_version = key_index.put(RevisionPair::new(2, 0));
        let put = VisibleVersion {
            revision: RevisionPair::new(5, 0),
            create_revision: 2,
            version: 2,
        };
        let overlay = PendingKey {
            changes: vec![
                PendingChange {
                    revision: put.revision,
                    kind: RowKind::Put,
                    after: Some(put),
                },
                PendingChange {
                    revision: RevisionPair::new(6, 0),
                    kind: RowKind::Tombstone,
                    after: None,
                },
            ],
        };
        assert_eq!(
            visible(Some(&key_index), Some(&overlay), 4),
            Some(committed_version)
        );
        assert_eq!(visible(Some(&key_index), Some(&overlay), 5), Some(put));
        assert_eq!(visible(Some(&key_index), Some(&overlay), 6), None);
        assert_eq!(visible(None, Some(&overlay), 1), None);
    }
}
