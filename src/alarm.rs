//! Alarms: the replicated table of (member, alarm type) pairs that etcd's Maintenance.Alarm
//! lists, raises and clears, and that decides whether apply still accepts writes.
//!
//! The table changes only when apply hands it a committed activate or deactivate, so it is
//! the same on every member. Each alarm is one row of the `meta` column family under
//! [`ROW_PREFIX`], written in apply's batch; the rows therefore travel with snapshots, and
//! they stay out of HashKV, which hashes only the key history. The table is read back from
//! those rows at open and after a snapshot install ([`AlarmTable::load`]).
//!
//! This module must not propose, await, read the clock or write to RocksDB itself: apply
//! writes the rows it returns, and the server decides when to raise an alarm.

use std::collections::BTreeSet;

use parking_lot::Mutex;

use crate::storage::backend::Cf;
use crate::storage::mvcc::{MvccError, MvccStore};
use crate::types::MemberId;

/// Prefix of every alarm row in the `meta` column family. It sits outside the MVCC store's
/// reserved prefix, so apply may write it with `WriteTxn::put_raw`.
pub const ROW_PREFIX: &[u8] = b"alarm/";

/// The first key after every alarm row: `/` + 1 is `0`.
const ROW_PREFIX_END: &[u8] = b"alarm0";

/// Length of a row key: the prefix, the member id (8 bytes) and the type number (4 bytes).
const ROW_KEY_LEN: usize = ROW_PREFIX.len() + 8 + 4;

/// What an alarm is about. The numbers are etcd's `AlarmType` values, and are also stored in
/// the row keys, so they never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmType {
    /// The backend grew past its quota: writes that need space are refused.
    NoSpace,
    /// A member found its data inconsistent with the others': every write is refused.
    Corrupt,
}

impl AlarmType {
    /// etcd's number for the type (`NOSPACE` = 1, `CORRUPT` = 2).
    #[must_use]
    pub fn number(self) -> i32 {
        match self {
            AlarmType::NoSpace => 1,
            AlarmType::Corrupt => 2,
        }
    }

    /// The type with etcd's number `number`; `None` for `NONE` (0) and unknown numbers.
    #[must_use]
    pub fn from_number(number: i32) -> Option<AlarmType> {
        match number {
            1 => Some(AlarmType::NoSpace),
            2 => Some(AlarmType::Corrupt),
            _ => None,
        }
    }

    /// etcd's name for the type, as its text format prints it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            AlarmType::NoSpace => "NOSPACE",
            AlarmType::Corrupt => "CORRUPT",
        }
    }
}

/// One raised alarm: which member raised it and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Alarm {
    /// The member the alarm is about.
    pub member: MemberId,
    /// What it is about.
    pub kind: AlarmType,
}

impl Alarm {
    /// The alarm as etcd writes it in `Status.errors` and `etcdctl alarm list`: the
    /// protobuf text form of `AlarmMember`, including its trailing space
    /// (`memberID:13668033151171901709 alarm:NOSPACE `).
    #[must_use]
    pub fn etcd_text(&self) -> String {
        format!("memberID:{} alarm:{} ", self.member, self.kind.name())
    }
}

/// The row key of `alarm`: [`ROW_PREFIX`], the member id, then the type number, both
/// big-endian so rows sort by member then type.
#[must_use]
pub fn row_key(alarm: Alarm) -> [u8; ROW_KEY_LEN] {
    let mut key = [0u8; ROW_KEY_LEN];
    let (prefix, rest) = key.split_at_mut(ROW_PREFIX.len());
    prefix.copy_from_slice(ROW_PREFIX);
    let (member, kind) = rest.split_at_mut(8);
    member.copy_from_slice(&alarm.member.to_be_bytes());
    kind.copy_from_slice(&alarm.kind.number().to_be_bytes());
    key
}

/// The alarm a row key names, or a corruption error for a key this build cannot read.
fn decode_row_key(key: &[u8]) -> Result<Alarm, MvccError> {
    let corrupt = || MvccError::Corrupt(format!("alarm row {key:02x?} is malformed"));
    let rest = key.strip_prefix(ROW_PREFIX).ok_or_else(corrupt)?;
    let rest: [u8; 12] = rest.try_into().map_err(|_| corrupt())?;
    let mut member = [0u8; 8];
    let mut kind = [0u8; 4];
    member.copy_from_slice(&rest[..8]);
    kind.copy_from_slice(&rest[8..]);
    let kind = AlarmType::from_number(i32::from_be_bytes(kind)).ok_or_else(corrupt)?;
    Ok(Alarm {
        member: MemberId::from_be_bytes(member),
        kind,
    })
}

/// The replicated set of raised alarms.
#[derive(Debug, Default)]
pub struct AlarmTable {
    /// The raised alarms, ordered by member then type so listings are deterministic.
    /// A leaf lock: nothing else is locked while it is held.
    alarms: Mutex<BTreeSet<Alarm>>,
}

impl AlarmTable {
    /// An empty table.
    #[must_use]
    pub fn new() -> AlarmTable {
        AlarmTable::default()
    }

    /// Replaces the table with the rows stored in `store`'s database (at open and after a
    /// snapshot install).
    ///
    /// # Errors
    /// A backend failure, or a row this build cannot read.
    pub fn load(&self, store: &MvccStore) -> Result<(), MvccError> {
        let backend = store.backend();
        let mut alarms = BTreeSet::new();
        for item in backend.scan(Cf::Meta, ROW_PREFIX, Some(ROW_PREFIX_END)) {
            let (key, _) = item?;
            alarms.insert(decode_row_key(&key)?);
        }
        *self.alarms.lock() = alarms;
        Ok(())
    }

    /// Applies a committed activate. Returns the row key to store when the alarm is new, and
    /// `None` when it was already raised (raising it again changes nothing).
    pub fn activate(&self, alarm: Alarm) -> Option<[u8; ROW_KEY_LEN]> {
        self.alarms.lock().insert(alarm).then(|| row_key(alarm))
    }

    /// Applies a committed deactivate. Returns the row key to delete when the alarm was
    /// raised, and `None` when it was not.
    pub fn deactivate(&self, alarm: Alarm) -> Option<[u8; ROW_KEY_LEN]> {
        self.alarms.lock().remove(&alarm).then(|| row_key(alarm))
    }

    /// The raised alarms of type `kind`, or all of them for `None`, by member then type.
    #[must_use]
    pub fn list(&self, kind: Option<AlarmType>) -> Vec<Alarm> {
        self.alarms
            .lock()
            .iter()
            .filter(|alarm| kind.is_none_or(|kind| alarm.kind == kind))
            .copied()
            .collect()
    }

    /// True when some member has raised an alarm of type `kind`.
    #[must_use]
    pub fn any(&self, kind: AlarmType) -> bool {
        self.alarms.lock().iter().any(|alarm| alarm.kind == kind)
    }

    /// True when `alarm` is raised.
    #[must_use]
    pub fn contains(&self, alarm: Alarm) -> bool {
        self.alarms.lock().contains(&alarm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::{Backend, BackendBatch};
    use std::sync::Arc;

    const NOSPACE_1: Alarm = Alarm {
        member: 1,
        kind: AlarmType::NoSpace,
    };
    const CORRUPT_1: Alarm = Alarm {
        member: 1,
        kind: AlarmType::Corrupt,
    };
    const NOSPACE_2: Alarm = Alarm {
        member: 2,
        kind: AlarmType::NoSpace,
    };

    #[test]
    fn type_numbers_are_etcds() {
        assert_eq!(AlarmType::NoSpace.number(), 1);
        assert_eq!(AlarmType::Corrupt.number(), 2);
        for kind in [AlarmType::NoSpace, AlarmType::Corrupt] {
            assert_eq!(AlarmType::from_number(kind.number()), Some(kind));
        }
        assert_eq!(AlarmType::from_number(0), None);
        assert_eq!(AlarmType::from_number(3), None);
        assert_eq!(AlarmType::from_number(-1), None);
    }

    #[test]
    fn text_matches_etcds_status_errors() {
        let alarm = Alarm {
            member: 13_668_033_151_171_901_709,
            kind: AlarmType::NoSpace,
        };
        assert_eq!(
            alarm.etcd_text(),
            "memberID:13668033151171901709 alarm:NOSPACE "
        );
    }

    #[test]
    fn activate_and_deactivate_report_only_changes() {
        let table = AlarmTable::new();
        assert_eq!(table.activate(NOSPACE_1), Some(row_key(NOSPACE_1)));
        assert_eq!(table.activate(NOSPACE_1), None, "already raised");
        assert!(table.any(AlarmType::NoSpace));
        assert!(!table.any(AlarmType::Corrupt));
        assert_eq!(table.deactivate(CORRUPT_1), None, "never raised");
        assert_eq!(table.deactivate(NOSPACE_1), Some(row_key(NOSPACE_1)));
        assert!(!table.any(AlarmType::NoSpace));
        assert!(table.list(None).is_empty());
    }

    #[test]
    fn list_filters_by_type_in_member_order() {
        let table = AlarmTable::new();
        for alarm in [NOSPACE_2, CORRUPT_1, NOSPACE_1] {
            table.activate(alarm);
        }
        assert_eq!(table.list(None), vec![NOSPACE_1, CORRUPT_1, NOSPACE_2]);
        assert_eq!(
            table.list(Some(AlarmType::NoSpace)),
            vec![NOSPACE_1, NOSPACE_2]
        );
        assert_eq!(table.list(Some(AlarmType::Corrupt)), vec![CORRUPT_1]);
        // One member's alarm going away leaves another member's of the same type raised.
        table.deactivate(NOSPACE_1);
        assert!(table.any(AlarmType::NoSpace));
        assert!(table.contains(NOSPACE_2));
    }

    #[test]
    fn row_keys_round_trip_and_sort_by_member() {
        for alarm in [NOSPACE_1, CORRUPT_1, NOSPACE_2] {
            assert_eq!(decode_row_key(&row_key(alarm)).unwrap(), alarm);
        }
        assert!(row_key(CORRUPT_1) < row_key(NOSPACE_2));
        assert!(row_key(NOSPACE_2).as_slice() < ROW_PREFIX_END);
        assert!(decode_row_key(b"alarm/short").is_err());
        let mut unknown_type = row_key(NOSPACE_1);
        unknown_type[ROW_KEY_LEN - 1] = 9;
        assert!(decode_row_key(&unknown_type).is_err());
    }

    #[test]
    fn load_reads_only_alarm_rows() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(Backend::open(dir.path()).unwrap());
        let mut batch = BackendBatch::new();
        batch.put(Cf::Meta, row_key(NOSPACE_2), b"");
        batch.put(Cf::Meta, row_key(CORRUPT_1), b"");
        // Neighbours on either side of the prefix are not alarms.
        batch.put(Cf::Meta, b"alarm", b"x");
        batch.put(Cf::Meta, b"alarm0", b"x");
        backend.write(batch).unwrap();
        let store = MvccStore::open(backend).unwrap();
        let table = AlarmTable::new();
        table.activate(NOSPACE_1);
        table.load(&store).unwrap();
        assert_eq!(table.list(None), vec![CORRUPT_1, NOSPACE_2]);
    }
}
