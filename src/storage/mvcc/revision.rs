//! Revision pairs and the byte encoding of history-row keys.
//!
//! Owns: [`RevisionPair`] (main revision plus sub-revision) and [`RowKey`], the key of one
//! row in the `kv` column family.
//! Must not: know about key indexes, values or the backend.
//!
//! Row key layout (17 bytes; an on-disk format):
//!
//! ```text
//! byte  0        8        16  17
//!       | main   | sub    |kind|
//!         u64 BE   u64 BE   b'p' = put, b't' = tombstone
//! ```
//!
//! Both numbers are non-negative, so big-endian bytes sort exactly like the numbers and a
//! RocksDB scan over the `kv` column family walks history in revision order. The kind byte
//! comes last so it never affects the order of two different revisions.

use crate::types::Revision;

use super::error::MvccError;

/// Bytes of the main revision in a row key.
pub const MAIN_REVISION_BYTES: usize = 8;
/// Bytes of the sub-revision in a row key.
pub const SUB_REVISION_BYTES: usize = 8;
/// Bytes of the put/tombstone mark at the end of a row key.
pub const ROW_KIND_BYTES: usize = 1;
/// Total length of a row key.
pub const ROW_KEY_BYTES: usize = MAIN_REVISION_BYTES + SUB_REVISION_BYTES + ROW_KIND_BYTES;

const _: () = assert!(ROW_KEY_BYTES == 17);

const PUT_MARK: u8 = b'p';
const TOMBSTONE_MARK: u8 = b't';

/// The position of one change in history: `main` is the store revision of the request that
/// made it, `sub` numbers the changes inside that request (0, 1, 2, ... within one txn).
/// Ordered by `main`, then `sub`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevisionPair {
    /// The store revision.
    pub main: Revision,
    /// The index of the change within its revision.
    pub sub: i64,
}

impl RevisionPair {
    /// A revision pair.
    pub const fn new(main: Revision, sub: i64) -> RevisionPair {
        RevisionPair { main, sub }
    }
}

/// Whether a history row records a put or a deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowKind {
    /// The key was written; the row holds the full key-value.
    Put,
    /// The key was deleted; the row holds only the key and the deletion revision.
    Tombstone,
}

/// The key of one history row in the `kv` column family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RowKey {
    /// When the change happened.
    pub revision: RevisionPair,
    /// What the change was.
    pub kind: RowKind,
}

impl RowKey {
    /// The row key of a put at `revision`.
    pub const fn put(revision: RevisionPair) -> RowKey {
        RowKey {
            revision,
            kind: RowKind::Put,
        }
    }

    /// The row key of a deletion at `revision`.
    pub const fn tombstone(revision: RevisionPair) -> RowKey {
        RowKey {
            revision,
            kind: RowKind::Tombstone,
        }
    }

    /// The 17-byte encoding described in the module docs.
    ///
    /// # Panics
    /// When a revision is negative: revisions start at 1 and sub-revisions at 0.
    pub fn encode(&self) -> [u8; ROW_KEY_BYTES] {
        assert!(
            self.revision.main >= 0,
            "negative main revision {}",
            self.revision.main
        );
        assert!(
            self.revision.sub >= 0,
            "negative sub-revision {}",
            self.revision.sub
        );
        let mut bytes = [0u8; ROW_KEY_BYTES];
        bytes[..MAIN_REVISION_BYTES].copy_from_slice(&self.revision.main.to_be_bytes());
        bytes[MAIN_REVISION_BYTES..MAIN_REVISION_BYTES + SUB_REVISION_BYTES]
            .copy_from_slice(&self.revision.sub.to_be_bytes());
        bytes[ROW_KEY_BYTES - 1] = match self.kind {
            RowKind::Put => PUT_MARK,
            RowKind::Tombstone => TOMBSTONE_MARK,
        };
        bytes
    }

    /// Parses a row key read from disk.
    ///
    /// # Errors
    /// [`MvccError::Corrupt`] when the length, sign or mark is wrong.
    pub fn decode(bytes: &[u8]) -> Result<RowKey, MvccError> {
        let bytes: &[u8; ROW_KEY_BYTES] = bytes.try_into().map_err(|_| {
            MvccError::Corrupt(format!(
                "history row key has {} bytes, expected {ROW_KEY_BYTES}",
                bytes.len()
            ))
        })?;
        let mut main = [0u8; MAIN_REVISION_BYTES];
        main.copy_from_slice(&bytes[..MAIN_REVISION_BYTES]);
        let mut sub = [0u8; SUB_REVISION_BYTES];
        sub.copy_from_slice(&bytes[MAIN_REVISION_BYTES..MAIN_REVISION_BYTES + SUB_REVISION_BYTES]);
        let revision = RevisionPair::new(i64::from_be_bytes(main), i64::from_be_bytes(sub));
        if revision.main < 0 || revision.sub < 0 {
            return Err(MvccError::Corrupt(format!(
                "negative revision in row key {revision:?}"
            )));
        }
        let kind = match bytes[ROW_KEY_BYTES - 1] {
            PUT_MARK => RowKind::Put,
            TOMBSTONE_MARK => RowKind::Tombstone,
            other => {
                return Err(MvccError::Corrupt(format!(
                    "unknown row kind mark {other:#04x}"
                )));
            }
        };
        Ok(RowKey { revision, kind })
    }
}

/// A bound that sorts before every row key of main revision `main` and after every row key
/// of smaller main revisions: use it as an inclusive lower or exclusive upper scan bound.
pub fn main_revision_bound(main: Revision) -> [u8; MAIN_REVISION_BYTES] {
    assert!(main >= 0, "negative main revision {main}");
    main.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_round_trip() {
        let samples = [
            RowKey::put(RevisionPair::new(0, 0)),
            RowKey::put(RevisionPair::new(1, 0)),
            RowKey::tombstone(RevisionPair::new(2, 7)),
            RowKey::put(RevisionPair::new(i64::MAX, i64::MAX)),
            RowKey::tombstone(RevisionPair::new(256, 65_536)),
        ];
        for row_key in samples {
            let bytes = row_key.encode();
            assert_eq!(RowKey::decode(&bytes).unwrap(), row_key);
        }
    }

    #[test]
    fn encoding_has_the_documented_layout() {
        let bytes = RowKey::tombstone(RevisionPair::new(0x0102, 3)).encode();
        assert_eq!(
            bytes,
            [0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 3, b't']
        );
        assert_eq!(RowKey::put(RevisionPair::new(1, 0)).encode()[16], b'p');
    }

    #[test]
    fn byte_order_matches_revision_order() {
        let mut revisions = Vec::new();
        for main in [0, 1, 2, 255, 256, 65_535, 65_536, 1 << 40, i64::MAX] {
            for sub in [0, 1, 255, 256, 1 << 33] {
                revisions.push(RevisionPair::new(main, sub));
            }
        }
        for left in &revisions {
            for right in &revisions {
                let left_key = RowKey::put(*left).encode();
                let right_key = RowKey::tombstone(*right).encode();
                if left != right {
                    assert_eq!(
                        left.cmp(right),
                        left_key.cmp(&right_key),
                        "{left:?} {right:?}"
                    );
                }
            }
            let bound = main_revision_bound(left.main);
            assert!(bound.as_slice() <= RowKey::put(*left).encode().as_slice());
            let next_bound = main_revision_bound(left.main.saturating_add(1));
            if left.main < i64::MAX {
                assert!(next_bound.as_slice() > RowKey::tombstone(*left).encode().as_slice());
            }
        }
    }

    #[test]
    fn decode_rejects_malformed_keys() {
        let good = RowKey::put(RevisionPair::new(5, 1)).encode();
        assert!(matches!(
            RowKey::decode(&good[..16]),
            Err(MvccError::Corrupt(_))
        ));
        let mut bad_mark = good;
        bad_mark[16] = b'x';
        assert!(matches!(
            RowKey::decode(&bad_mark),
            Err(MvccError::Corrupt(_))
        ));
        let mut negative = good;
        negative[0] = 0x80;
        assert!(matches!(
            RowKey::decode(&negative),
            Err(MvccError::Corrupt(_))
        ));
    }
}
